// loadgen — twinloop's native echo load generator (Linux only).
//
// One thread, one epoll set, non-blocking sockets, edge-triggered and registered once: a round
// trip costs the client one send, one recv and its share of one epoll_wait, so the client spends
// far less CPU than any server it measures (the figure the benchmark reports is *server* CPU per
// round trip; a heavy client would steal the shared cores and distort it).
//
// Every echoed byte is checked against a counter-based pseudo-random pattern keyed by
// (connection, message number), so a server that corrupts, reorders, duplicates or drops bytes
// is caught without keeping a copy of what was sent: bytes to send and bytes expected are both
// regenerated from the stream offset.
//
// Run `loadgen --help` for usage. Exit codes: 0 ok, 1 bad arguments, 2 connection errors that
// prevented the run, 3 corrupted echo seen.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441  // same number on every architecture (unified syscall table)
#endif

namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;
constexpr int kExitConnect = 2;
constexpr int kExitCorrupt = 3;

constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr size_t kIoBuf = 64 * 1024;          // one recv/send never moves more than this
constexpr int kMaxEvents = 1024;
constexpr uint32_t kMaxConnecting = 128;      // a connect storm overflows the listen backlog
                                              // and costs a 1 s SYN retransmit per drop
constexpr int64_t kConnectStallNs = 10 * kNsPerSec;
constexpr int64_t kRetryDelayNs = 1'000'000;  // keeps a refused churn slot from spinning
constexpr int64_t kDrainNs = kNsPerSec;       // how long the closing handshake may take

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * kNsPerSec + ts.tv_nsec;
}

double cpu_seconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// strerrorname_np needs glibc 2.32; the few errors a socket client meets are listed here.
const char* errno_name(int err) {
  switch (err) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ECONNABORTED: return "ECONNABORTED";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EADDRINUSE: return "EADDRINUSE";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOTCONN: return "ENOTCONN";
    case ENOSYS: return "ENOSYS";
    default: return "E?";
  }
}

std::string describe_errno(int err) {
  return std::string(errno_name(err)) + " (" + std::strerror(err) + ")";
}

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closing also removes the fd from the epoll set: no fd is ever dup'ed here, and epoll drops
  // an entry when the last reference to its open file goes (epoll(7), Q6).
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Log-linear histogram of nanoseconds, the HdrHistogram layout with 2 significant binary digits
// of 6 bits: 64 sub-buckets per power of two, so a bucket is at most 1/64 (1.6 %) of its value
// wide; values below 128 ns are exact. 1984 fixed buckets (16 KiB) cover 0 .. 2^36 ns (68.7 s);
// recording is a clz, a shift and an increment.
class Histogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr int64_t kMaxValue = (int64_t{1} << 36) - 1;
  static constexpr size_t kBuckets = 1984;

  static constexpr size_t index_of(uint64_t v) {
    if (v < (2u << kSubBits)) return size_t(v);
    int shift = (63 - std::countl_zero(v)) - kSubBits;
    return (size_t(shift) << kSubBits) + size_t(v >> shift);
  }

  void reset() {
    std::fill(std::begin(counts_), std::end(counts_), 0);
    total_ = 0;
    sum_ = 0;
    max_ = 0;
  }

  void record(int64_t ns) {
    ns = std::clamp<int64_t>(ns, 0, kMaxValue);
    ++counts_[index_of(uint64_t(ns))];
    ++total_;
    sum_ += double(ns);
    max_ = std::max(max_, ns);
  }

  uint64_t count() const { return total_; }
  int64_t max() const { return max_; }
  double mean() const { return total_ ? sum_ / double(total_) : 0; }

  // Smallest recorded value v such that at least q of all samples are <= v, reported as its
  // bucket's midpoint (never above the exact maximum).
  double quantile(double q) const {
    if (total_ == 0) return 0;
    uint64_t rank = uint64_t(std::ceil(q * double(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        auto [low, high] = bounds_of(i);
        return std::min(double(low + high) / 2, double(max_));
      }
    }
    return double(max_);
  }

 private:
  static std::pair<uint64_t, uint64_t> bounds_of(size_t i) {
    if (i < (2u << kSubBits)) return {i, i};
    int shift = int(i >> kSubBits) - 1;
    uint64_t m = i - (size_t(shift) << kSubBits);
    return {m << shift, ((m + 1) << shift) - 1};
  }

  uint64_t counts_[kBuckets] = {};
  uint64_t total_ = 0;
  double sum_ = 0;
  int64_t max_ = 0;
};

static_assert(Histogram::index_of(Histogram::kMaxValue) + 1 == Histogram::kBuckets);

// splitmix64's finaliser: counter-based, so the byte at any offset of any message can be made
// without generating what precedes it — sender and checker both work from stream offsets.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

uint64_t message_key(uint32_t conn, uint64_t seq) {
  return mix64(mix64(uint64_t{conn} * kGamma + 0x6a09e667f3bcc909ULL) ^ seq);
}

// Writes bytes [offset, offset + len) of the message with `key` into `out`.
void fill_pattern(uint64_t key, uint64_t offset, size_t len, unsigned char* out) {
  while (len > 0) {
    uint64_t word = mix64(key + (offset / 8 + 1) * kGamma);
    size_t skip = offset % 8;
    size_t n = std::min(len, 8 - skip);
    std::memcpy(out, reinterpret_cast<const unsigned char*>(&word) + skip, n);
    out += n;
    offset += n;
    len -= n;
  }
}

struct Options {
  std::string host;
  int port = -1;
  std::string unix_path;
  uint32_t connections = 50;
  uint64_t size = 64;
  uint32_t depth = 1;
  double duration_s = 5;
  bool duration_given = false;
  uint64_t requests = 0;  // 0: run for duration_s
  double warmup_s = 0;
  double rate = 0;        // 0: closed loop, as fast as the server answers
  double interval_s = 1;
  bool json = false;
  bool progress = false;
  bool churn = false;
  int cpu = -1;
};

constexpr const char* kUsage = R"(usage: loadgen (--host ADDR --port P | --unix PATH) [options]

Echo load generator: sends messages of a pseudo-random pattern, checks that every byte comes
back unchanged, and reports round trips, latency percentiles and starved connections.

target
  --host ADDR          numeric IPv4 or IPv6 address (127.0.0.1, ::1)
  --port P             TCP port
  --unix PATH          Unix stream socket instead of TCP
load
  --connections N      concurrent connections (default 50); RLIMIT_NOFILE is raised to its hard limit
  --size S             bytes per message (default 64)
  --depth D            messages in flight per connection, pipelined (default 1)
  --duration SECONDS   measured time (default 5; with --requests, an upper bound)
  --requests COUNT     stop after exactly COUNT measured round trips instead of after a duration
  --warmup SECONDS     run the load this long first without measuring it (default 0)
  --rate R             open loop: R round trips/s in total, scheduled at fixed intended times
                       spread over the connections; latency counts from the intended time, so
                       a stalled server is not hidden (no coordinated omission)
  --churn              each connection repeatedly connects, does one round trip and closes;
                       latency = connect + echo; reports connections per second
  --interval SECONDS   starvation interval (default 1): a connection with a request outstanding
                       for a whole interval that received no byte in it is starved
  --cpu N              pin the load generator to CPU N
output
  --json               print one JSON object on stdout
  --progress           print a line per interval on stderr
  --help               this text

JSON fields: mode, target, connections, size, depth, rate, duration_s, round_trips,
round_trips_per_s, connections_per_s (churn only), mb_per_s_one_way (payload MB = 10^6 bytes
echoed per second, counted in one direction), latency_us {p50, p90, p99, p999, max, mean},
starved {interval_s, intervals, intervals_with_starved, max_in_interval, total, distinct},
corrupt_bytes, errors, first_error, send_lag_us {mean, max} (rate mode: how late sends left,
included in latency), in_flight_at_end, client_cpu_s,
client_cpu_us_per_round_trip. Exit: 0 ok, 1 bad arguments, 2 connection errors prevented the
run, 3 corrupted echo seen.
)";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "loadgen: %s (see --help)\n", message.c_str());
  std::exit(kExitUsage);
}

[[noreturn]] void connect_error(const std::string& message) {
  std::fprintf(stderr, "loadgen: %s\n", message.c_str());
  std::exit(kExitConnect);
}

uint64_t parse_uint(std::string_view name, const char* text, uint64_t min, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max) {
    usage_error(std::string(name) + " must be an integer from " + std::to_string(min) + " to " +
                std::to_string(max) + ", got '" + text + "'");
  }
  return v;
}

double parse_seconds(std::string_view name, const char* text, double min, bool inclusive) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !std::isfinite(v) || v < min ||
      (!inclusive && v == min) || v > 1e7) {
    usage_error(std::string(name) + " must be a number " + (inclusive ? ">= " : "> ") +
                std::to_string(int(min)) + ", got '" + text + "'");
  }
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    bool has_inline = false;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto flag = [&](bool& target) {
      if (has_inline) usage_error(std::string(arg) + " takes no value");
      target = true;
    };
    auto value = [&]() -> const char* {
      if (has_inline) return argv[i] + (arg.size() + 1);
      if (i + 1 >= argc) usage_error(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    } else if (arg == "--host") {
      o.host = value();
    } else if (arg == "--port") {
      o.port = int(parse_uint("--port", value(), 1, 65535));
    } else if (arg == "--unix") {
      o.unix_path = value();
    } else if (arg == "--connections") {
      o.connections = uint32_t(parse_uint("--connections", value(), 1, 1'000'000));
    } else if (arg == "--size") {
      o.size = parse_uint("--size", value(), 1, uint64_t{1} << 30);
    } else if (arg == "--depth") {
      o.depth = uint32_t(parse_uint("--depth", value(), 1, 65536));
    } else if (arg == "--duration") {
      o.duration_s = parse_seconds("--duration", value(), 0, false);
      o.duration_given = true;
    } else if (arg == "--requests") {
      o.requests = parse_uint("--requests", value(), 1, uint64_t{1} << 62);
    } else if (arg == "--warmup") {
      o.warmup_s = parse_seconds("--warmup", value(), 0, true);
    } else if (arg == "--rate") {
      o.rate = parse_seconds("--rate", value(), 0, false);
    } else if (arg == "--interval") {
      o.interval_s = parse_seconds("--interval", value(), 0, false);
    } else if (arg == "--cpu") {
      o.cpu = int(parse_uint("--cpu", value(), 0, CPU_SETSIZE - 1));
    } else if (arg == "--json") {
      flag(o.json);
    } else if (arg == "--progress") {
      flag(o.progress);
    } else if (arg == "--churn") {
      flag(o.churn);
    } else {
      usage_error("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  bool tcp = !o.host.empty() || o.port >= 0;
  if (tcp && !o.unix_path.empty()) usage_error("--unix cannot be combined with --host/--port");
  if (!tcp && o.unix_path.empty()) usage_error("a target is required: --host and --port, or --unix");
  if (tcp && (o.host.empty() || o.port < 0)) usage_error("--host and --port go together");
  if (o.churn && o.depth != 1) usage_error("--churn does one round trip per connection; --depth must be 1");
  return o;
}

struct Target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
  std::string name;
};

Target resolve_target(const Options& o) {
  Target t;
  if (!o.unix_path.empty()) {
    auto* un = reinterpret_cast<sockaddr_un*>(&t.addr);
    if (o.unix_path.size() >= sizeof(un->sun_path)) usage_error("--unix path is too long");
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, o.unix_path.data(), o.unix_path.size());
    t.len = socklen_t(offsetof(sockaddr_un, sun_path) + o.unix_path.size() + 1);
    t.family = AF_UNIX;
    t.name = o.unix_path;
    return t;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&t.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&t.addr);
  if (inet_pton(AF_INET, o.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(uint16_t(o.port));
    t.len = sizeof(sockaddr_in);
    t.family = AF_INET;
    t.name = o.host + ":" + std::to_string(o.port);
  } else if (inet_pton(AF_INET6, o.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(uint16_t(o.port));
    t.len = sizeof(sockaddr_in6);
    t.family = AF_INET6;
    t.name = "[" + o.host + "]:" + std::to_string(o.port);
  } else {
    usage_error("--host must be a numeric IPv4 or IPv6 address, got '" + o.host + "'");
  }
  return t;
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += char(ch);
    } else if (ch < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", ch);
      out += esc;
    } else {
      out += char(ch);
    }
  }
  out += '"';
}

enum class State : uint8_t { kIdle, kConnecting, kOpen, kRetry, kDead };

// 64 bytes per connection plus 8 per pipelined message (their start times, kept in LoadGen).
struct Conn {
  UniqueFd fd;
  State state = State::kIdle;
  uint64_t seq_base = 0;  // churn: cycles done, which also numbers the next cycle's message
  uint64_t issued = 0;    // messages issued on this socket; message k is stream bytes [kS, (k+1)S)
  uint64_t tx_off = 0;    // stream bytes the kernel has taken
  uint64_t rx_off = 0;    // stream bytes received and checked
  int64_t busy_since = 0; // when the oldest outstanding message was issued
  int64_t last_rx = 0;    // last progress: a byte received or a connect completed
  int64_t retry_at = 0;
  bool starved_ever = false;
};

class LoadGen {
 public:
  LoadGen(const Options& o, Target t)
      : o_(o), target_(std::move(t)), conns_(o.connections), starts_(size_t(o.connections) * o.depth),
        rx_buf_(kIoBuf), tx_buf_(kIoBuf), expect_buf_(kIoBuf) {
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) connect_error("epoll_create1 failed: " + describe_errno(errno));
  }

  int run();

 private:
  uint64_t in_flight(const Conn& c) const { return c.issued - c.rx_off / o_.size; }
  bool open_socket(uint32_t i, int& err);
  void connect_all();
  int wait(int64_t timeout_ns);
  void handle_event(uint32_t i, uint32_t events);
  int64_t on_readable(uint32_t i, uint32_t events);
  void consume(uint32_t i, const unsigned char* data, size_t n, int64_t now);
  void complete(int64_t started, int64_t now);
  bool may_issue(const Conn& c, uint32_t i, uint64_t k) const;
  void pump(uint32_t i, int64_t now = 0);
  bool flush(uint32_t i);
  void lose(uint32_t i, int err, const char* what);
  void churn_start(uint32_t i, int64_t now);
  void churn_try_start(uint32_t i, int64_t now);
  void advance_schedule(int64_t now);
  void retry_due(int64_t now);
  void begin_measure(int64_t now);
  void note_lag(int64_t intended_ns, int64_t now) {
    if (!measuring_) return;
    lag_sum_ns_ += double(now - intended_ns);
    ++lag_count_;
    lag_max_ns_ = std::max(lag_max_ns_, now - intended_ns);
  }
  void close_interval();
  int64_t intended(uint32_t i, uint64_t k) const {
    return t0_ + int64_t((double(k) * o_.connections + i) * 1e9 / o_.rate);
  }
  void drain();
  int report();

  Options o_;
  Target target_;
  UniqueFd epoll_;
  std::vector<Conn> conns_;
  std::vector<int64_t> starts_;  // [conn * depth + k % depth]: start (or intended) time of message k
  std::vector<unsigned char> rx_buf_, tx_buf_, expect_buf_;
  epoll_event events_[kMaxEvents];
  bool use_pwait2_ = true;
  Histogram hist_;

  int64_t t0_ = 0;
  int64_t measure_start_ = 0, measure_end_ = 0, last_completion_ = 0;
  bool measuring_ = false, stopping_ = false;
  double cpu_start_ = 0, cpu_end_ = 0;
  uint64_t due_count_ = 0;  // rate mode: requests with index < due_count_ are due (global order)
  uint64_t outstanding_ = 0;
  double lag_sum_ns_ = 0;   // rate mode: how late sends left after their intended time
  uint64_t lag_count_ = 0;
  int64_t lag_max_ns_ = 0;
  uint64_t round_trips_ = 0;
  uint64_t corrupt_bytes_ = 0;
  uint64_t errors_ = 0;
  std::string first_error_;
  uint32_t alive_ = 0;
  uint32_t retry_pending_ = 0;
  int64_t next_retry_ = std::numeric_limits<int64_t>::max();

  int64_t interval_start_ = 0, next_interval_ = 0;
  uint64_t intervals_ = 0, intervals_with_starved_ = 0, starved_total_ = 0, starved_distinct_ = 0;
  uint64_t starved_max_ = 0, rt_at_interval_ = 0;
};

// Creates conns_[i]'s socket and starts connecting. False with err set when the connect failed
// at once (EAGAIN from a full AF_UNIX backlog means "try again", not an error).
bool LoadGen::open_socket(uint32_t i, int& err) {
  Conn& c = conns_[i];
  UniqueFd fd(socket(target_.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    err = errno;
    return false;
  }
  if (target_.family != AF_UNIX) {
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  int rc = connect(fd.get(), reinterpret_cast<const sockaddr*>(&target_.addr), target_.len);
  if (rc != 0 && errno != EINPROGRESS) {
    err = errno;
    return false;
  }
  // Registered once for both directions, edge-triggered: no epoll_ctl per message. A TCP socket
  // only signals write space after a send hit a full buffer (SOCK_NOSPACE), so EPOLLOUT costs
  // nothing in the steady state.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = i;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
    err = errno;
    return false;
  }
  c.fd = std::move(fd);
  c.state = rc == 0 ? State::kOpen : State::kConnecting;
  c.issued = c.tx_off = c.rx_off = 0;
  c.last_rx = now_ns();
  return true;
}

int LoadGen::wait(int64_t timeout_ns) {
  for (;;) {
    int n;
    if (use_pwait2_) {
      // epoll_wait rounds to milliseconds; an open-loop schedule at 100k/s needs better.
      struct { int64_t tv_sec; long long tv_nsec; } ts{timeout_ns / kNsPerSec, timeout_ns % kNsPerSec};
      n = int(syscall(SYS_epoll_pwait2, epoll_.get(), events_, kMaxEvents, timeout_ns < 0 ? nullptr : &ts,
                      nullptr, 0));
      if (n < 0 && (errno == ENOSYS || errno == EPERM)) {  // kernel < 5.11, or a seccomp filter
        use_pwait2_ = false;
        continue;
      }
    } else {
      int ms = timeout_ns < 0 ? -1 : int(std::min<int64_t>((timeout_ns + 999'999) / 1'000'000, 1 << 30));
      n = epoll_wait(epoll_.get(), events_, kMaxEvents, ms);
    }
    if (n >= 0) return n;
    if (errno != EINTR) connect_error("epoll_wait failed: " + describe_errno(errno));
  }
}

void LoadGen::connect_all() {
  uint32_t next = 0, connecting = 0, open = 0;
  int64_t last_progress = now_ns();
  bool backlog_full = false;
  auto fail = [&](int err) {
    std::string hint = err == ECONNREFUSED ? "; is the server listening?" : "";
    connect_error("connect to " + target_.name + " failed: " + describe_errno(err) + hint);
  };
  while (open < o_.connections) {
    backlog_full = false;
    while (next < o_.connections && connecting < kMaxConnecting) {
      int err = 0;
      if (!open_socket(next, err)) {
        if (err == EAGAIN && target_.family == AF_UNIX) {
          backlog_full = true;
          break;
        }
        if (err == EMFILE || err == ENFILE) {
          connect_error("cannot open " + std::to_string(o_.connections) + " sockets: " + describe_errno(err));
        }
        fail(err);
      }
      if (conns_[next].state == State::kOpen) {
        ++open;
        last_progress = now_ns();
      } else {
        ++connecting;
      }
      ++next;
    }
    if (open == o_.connections) break;
    int n = wait(backlog_full ? kRetryDelayNs : 100'000'000);
    int64_t now = now_ns();
    for (int e = 0; e < n; ++e) {
      uint32_t i = uint32_t(events_[e].data.u64);
      Conn& c = conns_[i];
      if (c.state != State::kConnecting) continue;
      if (!(events_[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) fail(err);
      if (events_[e].events & EPOLLHUP) fail(ECONNRESET);
      c.state = State::kOpen;
      c.last_rx = now;
      --connecting;
      ++open;
      last_progress = now;
    }
    if (now - last_progress > kConnectStallNs) fail(ETIMEDOUT);
  }
  alive_ = o_.connections;
}

void LoadGen::lose(uint32_t i, int err, const char* what) {
  Conn& c = conns_[i];
  ++errors_;
  if (first_error_.empty()) {
    first_error_ = std::string(what) + ": " + (err ? describe_errno(err) : "connection closed by the server");
  }
  if (c.state == State::kOpen || c.state == State::kConnecting) outstanding_ -= in_flight(c);
  c.fd.reset();
  c.busy_since = 0;
  if (o_.churn) {
    ++c.seq_base;  // the failed cycle is given up, the schedule moves on
    c.state = State::kRetry;
    c.retry_at = now_ns() + kRetryDelayNs;
    ++retry_pending_;
    next_retry_ = std::min(next_retry_, c.retry_at);
  } else {
    c.state = State::kDead;
    --alive_;
  }
}

bool LoadGen::may_issue(const Conn& c, uint32_t i, uint64_t k) const {
  if (stopping_) return false;
  if (o_.requests && round_trips_ + outstanding_ >= o_.requests) return false;
  if (!o_.churn && in_flight(c) >= o_.depth) return false;
  if (o_.rate > 0 && k * o_.connections + i >= due_count_) return false;
  return true;
}

// Issues as many messages as the depth, the schedule and the request budget allow, then sends.
// `now` is the time of the recv that freed the slots, if there was one: a second clock read per
// round trip was 2 % of the client's CPU.
void LoadGen::pump(uint32_t i, int64_t now) {
  Conn& c = conns_[i];
  if (c.state != State::kOpen) return;
  while (may_issue(c, i, c.issued)) {
    if (now == 0) now = now_ns();
    if (in_flight(c) == 0) c.busy_since = now;
    int64_t start = now;
    if (o_.rate > 0) {
      start = intended(i, c.issued);
      note_lag(start, now);
    }
    starts_[size_t(i) * o_.depth + c.issued % o_.depth] = start;
    ++c.issued;
    ++outstanding_;
  }
  flush(i);
}

bool LoadGen::flush(uint32_t i) {
  Conn& c = conns_[i];
  const uint64_t size = o_.size;
  const uint64_t end = c.issued * size;
  while (c.tx_off < end) {
    size_t n = size_t(std::min<uint64_t>(end - c.tx_off, kIoBuf));
    // Several pipelined messages go out in one send.
    for (size_t done = 0; done < n;) {
      uint64_t off = c.tx_off + done;
      uint64_t k = off / size;
      size_t part = size_t(std::min<uint64_t>(n - done, (k + 1) * size - off));
      fill_pattern(message_key(i, c.seq_base + k), off - k * size, part, tx_buf_.data() + done);
      done += part;
    }
    ssize_t w = send(c.fd.get(), tx_buf_.data(), n, MSG_NOSIGNAL);
    if (w > 0) {
      c.tx_off += uint64_t(w);
    } else if (errno == EAGAIN) {
      return true;  // EPOLLOUT (edge) comes when the kernel has room again
    } else if (errno != EINTR) {
      lose(i, errno, "send");
      return false;
    }
  }
  return true;
}

void LoadGen::complete(int64_t started, int64_t now) {
  --outstanding_;
  if (!measuring_) return;
  hist_.record(now - started);
  ++round_trips_;
  last_completion_ = now;
}

void LoadGen::consume(uint32_t i, const unsigned char* data, size_t n, int64_t now) {
  Conn& c = conns_[i];
  const uint64_t size = o_.size;
  c.last_rx = now;
  // A byte beyond what was sent cannot be an echo: counted as corrupt and dropped, so that the
  // count of completed messages never runs ahead of the messages issued.
  if (c.rx_off + n > c.tx_off) {
    uint64_t excess = c.rx_off + n - c.tx_off;
    corrupt_bytes_ += excess;
    n -= size_t(excess);
  }
  for (size_t done = 0; done < n;) {
    uint64_t off = c.rx_off + done;
    uint64_t k = off / size;
    size_t part = size_t(std::min<uint64_t>(n - done, (k + 1) * size - off));
    fill_pattern(message_key(i, c.seq_base + k), off - k * size, part, expect_buf_.data());
    if (std::memcmp(expect_buf_.data(), data + done, part) != 0) {
      for (size_t b = 0; b < part; ++b) corrupt_bytes_ += expect_buf_[b] != data[done + b];
    }
    done += part;
  }
  uint64_t first = c.rx_off / size;
  c.rx_off += n;
  uint64_t last = c.rx_off / size;
  for (uint64_t k = first; k < last; ++k) complete(starts_[size_t(i) * o_.depth + k % o_.depth], now);
  if (last > first) c.busy_since = in_flight(c) > 0 ? now : 0;
}

// Returns the time of the last recv, or 0 when the connection was lost.
int64_t LoadGen::on_readable(uint32_t i, uint32_t events) {
  Conn& c = conns_[i];
  int64_t now = 0;
  // With edge triggering the socket must be read until it is empty. A short read already says
  // so — any byte arriving later raises a new edge — which saves the recv that would only
  // return EAGAIN. A FIN or error may already have been signalled in this edge, though, so
  // then read on until EOF/EAGAIN.
  const bool must_drain = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
  for (;;) {
    ssize_t n = recv(c.fd.get(), rx_buf_.data(), kIoBuf, 0);
    if (n > 0) {
      now = now_ns();
      consume(i, rx_buf_.data(), size_t(n), now);
      if (size_t(n) < kIoBuf && !must_drain) break;
    } else if (n == 0) {
      lose(i, 0, "recv");
      return 0;
    } else if (errno == EAGAIN) {
      break;
    } else if (errno != EINTR) {
      lose(i, errno, "recv");
      return 0;
    }
  }
  return now;
}

void LoadGen::churn_start(uint32_t i, int64_t now) {
  Conn& c = conns_[i];
  int err = 0;
  int64_t started = o_.rate > 0 ? intended(i, c.seq_base) : now;
  if (!open_socket(i, err)) {
    // A full AF_UNIX backlog is back-pressure, not a failure; anything else is counted.
    if (!(err == EAGAIN && target_.family == AF_UNIX)) {
      c.state = State::kIdle;  // nothing was issued, so lose() has no outstanding cycle to drop
      lose(i, err, "connect");
      return;
    }
    c.state = State::kRetry;
    c.retry_at = now + kRetryDelayNs;
    ++retry_pending_;
    next_retry_ = std::min(next_retry_, c.retry_at);
    return;
  }
  starts_[i] = started;
  if (o_.rate > 0) note_lag(started, now);
  c.busy_since = now;
  c.issued = 1;
  ++outstanding_;
  if (c.state == State::kOpen) flush(i);
}

void LoadGen::churn_try_start(uint32_t i, int64_t now) {
  Conn& c = conns_[i];
  if (c.state == State::kIdle && may_issue(c, i, c.seq_base)) churn_start(i, now);
}

void LoadGen::handle_event(uint32_t i, uint32_t events) {
  Conn& c = conns_[i];
  if (c.state == State::kConnecting) {
    int err = 0;
    if (events & (EPOLLERR | EPOLLHUP)) {
      socklen_t len = sizeof err;
      getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      lose(i, err ? err : ECONNRESET, "connect");
      return;
    }
    if (!(events & EPOLLOUT)) return;
    c.state = State::kOpen;
    c.last_rx = now_ns();
    if (!flush(i)) return;
  }
  if (c.state != State::kOpen) return;
  int64_t now = 0;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    now = on_readable(i, events);
    if (c.state != State::kOpen) return;
  }
  if (o_.churn) {
    if (c.rx_off == o_.size) {
      // Closing with nothing unread sends a FIN, not a RST; on loopback the client's TIME_WAIT
      // ports are reused at once (net.ipv4.tcp_tw_reuse defaults to 2, loopback only).
      c.fd.reset();
      c.state = State::kIdle;
      c.busy_since = 0;
      ++c.seq_base;
      churn_try_start(i, now != 0 ? now : now_ns());
    } else if (events & EPOLLOUT) {
      flush(i);
    }
    return;
  }
  pump(i, now);
}

// Rate mode: marks the requests whose intended time has come as due, and lets the connections
// they belong to send (request g belongs to connection g % N, its k-th one being g / N).
void LoadGen::advance_schedule(int64_t now) {
  if (o_.rate <= 0 || stopping_ || now < t0_) return;
  uint64_t due = uint64_t(double(now - t0_) * o_.rate / 1e9) + 1;
  if (due <= due_count_) return;
  uint64_t from = due_count_;
  due_count_ = due;
  uint64_t n = o_.connections;
  uint64_t count = std::min<uint64_t>(due - from, n);
  for (uint64_t g = from; g < from + count; ++g) {
    uint32_t i = uint32_t(g % n);
    if (o_.churn) churn_try_start(i, now);
    else pump(i, now);
  }
}

void LoadGen::retry_due(int64_t now) {
  if (retry_pending_ == 0 || now < next_retry_) return;
  next_retry_ = std::numeric_limits<int64_t>::max();
  for (uint32_t i = 0; i < o_.connections; ++i) {
    Conn& c = conns_[i];
    if (c.state != State::kRetry) continue;
    if (c.retry_at <= now) {
      --retry_pending_;
      c.state = State::kIdle;
      churn_try_start(i, now);
    } else {
      next_retry_ = std::min(next_retry_, c.retry_at);
    }
  }
}

void LoadGen::begin_measure(int64_t now) {
  measuring_ = true;
  measure_start_ = now;
  cpu_start_ = cpu_seconds();
  round_trips_ = 0;
  lag_sum_ns_ = 0;
  lag_count_ = 0;
  lag_max_ns_ = 0;
  hist_.reset();
  interval_start_ = now;
  next_interval_ = now + int64_t(o_.interval_s * 1e9);
}

void LoadGen::close_interval() {
  uint64_t starved = 0;
  for (Conn& c : conns_) {
    bool busy = (c.state == State::kOpen || c.state == State::kConnecting) && c.busy_since != 0;
    if (busy && c.busy_since <= interval_start_ && c.last_rx < interval_start_) {
      ++starved;
      if (!c.starved_ever) {
        c.starved_ever = true;
        ++starved_distinct_;
      }
    }
  }
  ++intervals_;
  starved_total_ += starved;
  starved_max_ = std::max(starved_max_, starved);
  if (starved) ++intervals_with_starved_;
  if (o_.progress) {
    double secs = double(next_interval_ - measure_start_) / 1e9;
    double rate = double(round_trips_ - rt_at_interval_) / o_.interval_s;
    std::fprintf(stderr, "loadgen: %7.1f s  %10.0f round trips/s  in flight %" PRIu64 "  starved %" PRIu64
                 "  corrupt bytes %" PRIu64 "  errors %" PRIu64 "\n",
                 secs, rate, outstanding_, starved, corrupt_bytes_, errors_);
  }
  rt_at_interval_ = round_trips_;
  interval_start_ = next_interval_;
  next_interval_ += int64_t(o_.interval_s * 1e9);
}

// Half-closes every connection and reads until the server's FIN, so the server sees a clean
// end of stream instead of a RST for the echoes still in flight (Node's net emits that RST as
// an 'error' which kills a server without a handler).
void LoadGen::drain() {
  uint32_t open = 0;
  for (Conn& c : conns_) {
    if (c.state == State::kOpen) {
      shutdown(c.fd.get(), SHUT_WR);
      ++open;
    } else {
      c.fd.reset();
    }
  }
  int64_t deadline = now_ns() + kDrainNs;
  while (open > 0) {
    int64_t left = deadline - now_ns();
    if (left <= 0) break;
    int n = wait(left);
    for (int e = 0; e < n; ++e) {
      Conn& c = conns_[events_[e].data.u64];
      if (!c.fd.valid()) continue;
      for (;;) {
        ssize_t r = recv(c.fd.get(), rx_buf_.data(), kIoBuf, 0);
        if (r > 0) continue;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        c.fd.reset();
        --open;
        break;
      }
    }
  }
  for (Conn& c : conns_) c.fd.reset();
}

int LoadGen::run() {
  if (o_.churn) {
    // Probe once so that a missing server is an error before the run, as in echo mode.
    Options probe_opts = o_;
    probe_opts.connections = 1;
    LoadGen probe(probe_opts, target_);
    probe.connect_all();
    t0_ = now_ns();
    for (uint32_t i = 0; i < o_.connections; ++i) conns_[i].state = State::kIdle;
  } else {
    connect_all();
    t0_ = now_ns();
  }
  const int64_t warmup_ns = int64_t(o_.warmup_s * 1e9);
  const int64_t duration_ns = int64_t(o_.duration_s * 1e9);
  const bool timed = o_.requests == 0 || o_.duration_given;
  if (warmup_ns == 0) begin_measure(t0_);
  advance_schedule(t0_);
  if (o_.rate <= 0) {
    for (uint32_t i = 0; i < o_.connections; ++i) {
      if (o_.churn) churn_try_start(i, t0_);
      else pump(i);
    }
    // The whole first wave is requested at t0; without this a connection the server never
    // answers would escape the first interval's starvation count by the microseconds the loop
    // above took to reach it.
    for (Conn& c : conns_) {
      if (c.busy_since != 0) c.busy_since = t0_;
    }
  }

  for (;;) {
    int64_t now = now_ns();
    if (!measuring_ && now >= t0_ + warmup_ns) {
      begin_measure(now);
      if (o_.progress) std::fprintf(stderr, "loadgen: warmup done, measuring\n");
    }
    advance_schedule(now);
    retry_due(now);
    while (measuring_ && now >= next_interval_) close_interval();
    if (measuring_ && timed && now >= measure_start_ + duration_ns) {
      measure_end_ = now;
      break;
    }
    if (measuring_ && o_.requests && round_trips_ >= o_.requests) {
      measure_end_ = last_completion_;
      break;
    }
    if (!o_.churn && alive_ == 0) {
      measure_end_ = now;
      break;
    }

    int64_t deadline = std::numeric_limits<int64_t>::max();
    if (!measuring_) deadline = t0_ + warmup_ns;
    else {
      deadline = next_interval_;
      if (timed) deadline = std::min(deadline, measure_start_ + duration_ns);
    }
    if (o_.rate > 0) deadline = std::min(deadline, intended(0, 0) + int64_t(double(due_count_) * 1e9 / o_.rate));
    if (retry_pending_) deadline = std::min(deadline, next_retry_);
    int n = wait(std::max<int64_t>(deadline - now_ns(), 0));
    for (int e = 0; e < n; ++e) handle_event(uint32_t(events_[e].data.u64), events_[e].events);
  }
  cpu_end_ = cpu_seconds();
  if (!measuring_) {  // every connection died during warmup
    measure_start_ = measure_end_;
    cpu_start_ = cpu_end_;
  }
  stopping_ = true;
  uint64_t in_flight_at_end = outstanding_;
  drain();
  outstanding_ = in_flight_at_end;
  return report();
}

int LoadGen::report() {
  double secs = std::max(double(measure_end_ - measure_start_) / 1e9, 1e-9);
  double cpu = cpu_end_ - cpu_start_;
  double rps = double(round_trips_) / secs;
  double mbps = double(round_trips_) * double(o_.size) / secs / 1e6;
  double cpu_us_per_rt = round_trips_ ? cpu * 1e6 / double(round_trips_) : 0;
  auto us = [&](double ns) { return ns / 1e3; };
  bool have = hist_.count() > 0;

  if (o_.json) {
    std::string out;
    char num[64];
    auto add = [&](const char* key, double v, const char* fmt) {
      out += '"';
      out += key;
      out += "\":";
      std::snprintf(num, sizeof num, fmt, v);
      out += num;
      out += ',';
    };
    auto add_u = [&](const char* key, uint64_t v) {
      out += '"';
      out += key;
      out += "\":";
      out += std::to_string(v);
      out += ',';
    };
    out += "{\"mode\":";
    json_string(out, o_.churn ? "churn" : "echo");
    out += ",\"target\":";
    json_string(out, target_.name);
    out += ',';
    add_u("connections", o_.connections);
    add_u("size", o_.size);
    add_u("depth", o_.depth);
    if (o_.rate > 0) add("rate", o_.rate, "%.17g");
    else out += "\"rate\":null,";
    add("duration_s", secs, "%.6f");
    add_u("round_trips", round_trips_);
    add("round_trips_per_s", rps, "%.1f");
    if (o_.churn) add("connections_per_s", rps, "%.1f");
    add("mb_per_s_one_way", mbps, "%.3f");
    out += "\"latency_us\":{";
    constexpr std::pair<const char*, double> kQuantiles[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p999", 0.999}};
    for (auto [key, q] : kQuantiles) {
      if (have) {
        add(key, us(hist_.quantile(q)), "%.1f");
      } else {
        out += '"';
        out += key;
        out += "\":null,";
      }
    }
    if (have) {
      add("max", us(double(hist_.max())), "%.1f");
      add("mean", us(hist_.mean()), "%.1f");
      out.back() = '}';
    } else {
      out += "\"max\":null,\"mean\":null}";
    }
    out += ",\"starved\":{";
    add("interval_s", o_.interval_s, "%g");
    add_u("intervals", intervals_);
    add_u("intervals_with_starved", intervals_with_starved_);
    add_u("max_in_interval", starved_max_);
    add_u("total", starved_total_);
    add_u("distinct", starved_distinct_);
    out.back() = '}';
    out += ',';
    add_u("corrupt_bytes", corrupt_bytes_);
    add_u("errors", errors_);
    out += "\"first_error\":";
    if (first_error_.empty()) out += "null";
    else json_string(out, first_error_);
    out += ',';
    if (lag_count_) {
      out += "\"send_lag_us\":{";
      add("mean", us(lag_sum_ns_ / double(lag_count_)), "%.1f");
      add("max", us(double(lag_max_ns_)), "%.1f");
      out.back() = '}';
      out += ',';
    } else {
      out += "\"send_lag_us\":null,";
    }
    add_u("in_flight_at_end", outstanding_);
    add("client_cpu_s", cpu, "%.6f");
    add("client_cpu_us_per_round_trip", cpu_us_per_rt, "%.3f");
    out.back() = '}';
    out += '\n';
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("loadgen: %s %s, %u connections, %" PRIu64 " B, depth %u, %s, %.2f s\n",
                o_.churn ? "churn" : "echo", target_.name.c_str(), o_.connections, o_.size, o_.depth,
                o_.rate > 0 ? ("rate " + std::to_string(llround(o_.rate)) + "/s").c_str() : "closed loop", secs);
    std::printf("  round trips    %" PRIu64 "  (%.0f/s%s, %.2f MB/s payload each way)\n", round_trips_, rps,
                o_.churn ? " = connections/s" : "", mbps);
    if (have) {
      std::printf("  latency µs     p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
                  us(hist_.quantile(0.5)), us(hist_.quantile(0.9)), us(hist_.quantile(0.99)),
                  us(hist_.quantile(0.999)), us(double(hist_.max())), us(hist_.mean()));
    }
    if (lag_count_) {
      std::printf("  send lag µs    mean %.1f  max %.1f (actual send after intended time; included in latency)\n",
                  us(lag_sum_ns_ / double(lag_count_)), us(double(lag_max_ns_)));
    }
    std::printf("  starved        %" PRIu64 " of %" PRIu64 " intervals (max %" PRIu64 ", total %" PRIu64
                ", distinct connections %" PRIu64 ")\n",
                intervals_with_starved_, intervals_, starved_max_, starved_total_, starved_distinct_);
    std::printf("  corrupt bytes  %" PRIu64 "   errors %" PRIu64 "%s%s\n", corrupt_bytes_, errors_,
                first_error_.empty() ? "" : "  first: ", first_error_.c_str());
    std::printf("  client CPU     %.3f s (%.2f µs per round trip)\n", cpu, cpu_us_per_rt);
  }
  std::fflush(stdout);

  if (corrupt_bytes_ > 0) {
    std::fprintf(stderr, "loadgen: %" PRIu64 " corrupt bytes in the echo\n", corrupt_bytes_);
    return kExitCorrupt;
  }
  bool prevented = errors_ > 0 && (round_trips_ == 0 || (!o_.churn && alive_ == 0));
  if (prevented) {
    std::fprintf(stderr, "loadgen: connections failed: %s\n", first_error_.c_str());
    return kExitConnect;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  Target target = resolve_target(o);
  signal(SIGPIPE, SIG_IGN);  // MSG_NOSIGNAL covers send; this covers anything else
  if (o.rate > 0) {
    // epoll timeouts are hrtimers stretched by the task's timer slack (50 µs by default): here
    // open-loop sends left 35-55 µs after their intended time with it, 8 µs without, and that
    // delay is counted as server latency.
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  }

  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      uint64_t{o.connections} + 16 > rl.rlim_cur) {
    connect_error("cannot open " + std::to_string(o.connections) + " connections: RLIMIT_NOFILE is " +
                  std::to_string(rl.rlim_cur));
  }
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      usage_error("--cpu " + std::to_string(o.cpu) + ": sched_setaffinity failed: " + describe_errno(errno));
    }
  }
  // The load generator owns a few MiB at most; keep it on the heap, not the stack.
  auto gen = std::make_unique<LoadGen>(o, std::move(target));
  return gen->run();
}
