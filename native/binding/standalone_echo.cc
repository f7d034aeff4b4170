// The benchmark's primitive alone: the native echo (echo_server.h) driving a loop of its own, with
// no Node — the thread blocks in the backend's own wait (epoll_wait, io_uring_enter, kevent),
// then drains. Its figures are what the backend reaches on this machine; the native echo inside
// Node (native_echo.cc) adds Node's loop, the JavaScript servers add the binding and their code.
//
//   standalone_echo --backend epoll [--host 127.0.0.1]
//
// It speaks the benchmark servers' control channel (bench/servers/control.ts): one JSON line
// {"port", "info"} when it listens, then one snapshot line per line read on stdin; it exits when
// stdin closes. The control thread reads the loop's counters as the loop thread last published
// them (after each wake), so a snapshot never waits for the loop.
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "echo_server.h"

namespace twinloop {
namespace {

struct Published {
  std::atomic<uint64_t> syscalls{0};
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> wakes{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<int64_t> connections{0};
};

uint64_t micros(const timeval& t) { return static_cast<uint64_t>(t.tv_sec) * 1'000'000u + static_cast<uint64_t>(t.tv_usec); }

std::string snapshot(const Published& counters) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  uint64_t resident_pages = 0;
  std::ifstream("/proc/self/statm") >> resident_pages >> resident_pages;  // size, then resident
  auto relaxed = [](const auto& counter) { return std::to_string(counter.load(std::memory_order_relaxed)); };
  return "{\"timeUs\":" + std::to_string(static_cast<uint64_t>(now.tv_sec) * 1'000'000u + static_cast<uint64_t>(now.tv_nsec) / 1000) +
         ",\"cpuUs\":" + std::to_string(micros(usage.ru_utime) + micros(usage.ru_stime)) +
         ",\"userCpuUs\":" + std::to_string(micros(usage.ru_utime)) +
         ",\"contextSwitches\":" + std::to_string(usage.ru_nvcsw + usage.ru_nivcsw) +
         ",\"rssBytes\":" + std::to_string(resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE))) +
         ",\"heapUsedBytes\":0,\"connections\":" + relaxed(counters.connections) + ",\"loop\":{\"syscalls\":" +
         relaxed(counters.syscalls) + ",\"events\":" + relaxed(counters.events) + ",\"wakes\":" + relaxed(counters.wakes) +
         ",\"batches\":" + relaxed(counters.batches) + ",\"jsCalls\":0}}";
}

int run(int argc, char** argv) {
  std::string backend = "auto";
  std::string host = "127.0.0.1";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--backend") backend = argv[i + 1];
    else if (flag == "--host") host = argv[i + 1];
    else {
      std::cerr << "standalone_echo: unknown option " << flag << "\n";
      return 2;
    }
  }
  std::string error;
  std::unique_ptr<EchoServer> echo = EchoServer::open(backend, {SocketAddress::Family::kIPv4, host, 0}, error);
  if (echo && echo->backend().wait(0) == kENOSYS) error = "backend '" + backend + "' cannot wait on a thread of its own";
  if (!echo || !error.empty()) {
    std::cerr << "standalone_echo: " << error << "\n";
    return 1;
  }
  const BackendInfo& info = echo->backend().info();
  std::string features;
  for (const std::string& feature : info.features) features += (features.empty() ? "\"" : ",\"") + feature + "\"";
  std::cout << "{\"port\":" << echo->port() << ",\"info\":{\"backend\":\"" << info.name << "\",\"pattern\":\""
            << info.native_pattern << "\",\"features\":[" << features << "],\"standalone\":true}}" << std::endl;

  Published counters;
  std::thread control([&counters] {
    for (std::string line; std::getline(std::cin, line);) std::cout << snapshot(counters) << std::endl;
    std::_Exit(0);  // stdin closed: the run is over (the loop thread is blocked in the kernel)
  });
  control.detach();
  for (;;) {
    int rc = echo->backend().wait(-1);
    if (rc < 0) {
      std::cerr << "standalone_echo: wait failed: " << std::strerror(-rc) << "\n";
      return 1;
    }
    echo->run();
    Stats stats = echo->backend().stats();
    counters.syscalls.store(stats.syscalls, std::memory_order_relaxed);
    counters.events.store(stats.events, std::memory_order_relaxed);
    counters.wakes.store(echo->wakes(), std::memory_order_relaxed);
    counters.batches.store(echo->batches(), std::memory_order_relaxed);
    counters.connections.store(echo->connections(), std::memory_order_relaxed);
  }
}

}  // namespace
}  // namespace twinloop

int main(int argc, char** argv) { return twinloop::run(argc, argv); }
