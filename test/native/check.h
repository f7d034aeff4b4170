// A minimal harness for the native unit tests: CHECK records a failure and goes on, so one run
// reports every broken expectation; TEST registers a case that main() runs. No framework: these
// are plain executables that ctest runs (and that exit non-zero on any failure). Each test is one
// source file, so the main() below is defined once per executable.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace twinloop::test {

struct Case {
  const char* name;
  void (*run)();
};

inline std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}
inline int failures = 0;

struct Registration {
  Registration(const char* name, void (*run)()) { cases().push_back({name, run}); }
};

inline void check(bool ok, const char* expression, const char* file, int line) {
  if (ok) return;
  std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", file, line, expression);
  ++failures;
}

template <typename A, typename B>
void check_eq(const A& a, const B& b, const char* expression, const char* file, int line) {
  if (a == b) return;
  std::fprintf(stderr, "%s:%d: CHECK_EQ(%s) failed: %s != %s\n", file, line, expression,
               std::to_string(a).c_str(), std::to_string(b).c_str());
  ++failures;
}

inline int run_all() {
  for (const Case& c : cases()) {
    int before = failures;
    c.run();
    std::printf("%s %s\n", failures == before ? "ok  " : "FAIL", c.name);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace twinloop::test

#define TEST(name)                                                        \
  static void name();                                                     \
  static const ::twinloop::test::Registration name##_registration{#name, name}; \
  static void name()
#define CHECK(expression) ::twinloop::test::check(static_cast<bool>(expression), #expression, __FILE__, __LINE__)
#define CHECK_EQ(a, b) ::twinloop::test::check_eq((a), (b), #a ", " #b, __FILE__, __LINE__)

int main() { return ::twinloop::test::run_all(); }
