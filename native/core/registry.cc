#include <algorithm>

#include "backend.h"

namespace twinloop {

namespace {
std::vector<BackendEntry>& entries() {
  static std::vector<BackendEntry> list;
  return list;
}
}  // namespace

const std::vector<BackendEntry>& registered_backends() { return entries(); }

BackendRegistration::BackendRegistration(BackendEntry entry) {
  auto& list = entries();
  list.push_back(entry);
  std::stable_sort(list.begin(), list.end(),
                   [](const BackendEntry& a, const BackendEntry& b) { return a.preference > b.preference; });
}

}  // namespace twinloop
