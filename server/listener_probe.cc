#include "server/listener_probe.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "absl/time/clock.h"
#include "server/server_metrics.h"
#include "util/file.h"

namespace twotower {

namespace {

// The HTTP/2 client connection preface and an empty SETTINGS frame.
constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
constexpr size_t kPrefaceBytes = sizeof(kPreface) - 1;

struct AddrInfoFree {
  void operator()(addrinfo* info) const { ::freeaddrinfo(info); }
};

// Milliseconds left until `deadline`, at least 0.
int MillisecondsLeft(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return ms < 0 ? 0 : static_cast<int>(ms);
}

}  // namespace

ListenerProbe::ListenerProbe(std::string address, Options options,
                             std::function<void(bool)> on_change)
    : address_(std::move(address)), options_(options), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { Run(); });
}

ListenerProbe::~ListenerProbe() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

bool ListenerProbe::accepting() const {
  absl::MutexLock lock(&mu_);
  return accepting_;
}

void ListenerProbe::Run() {
  int failed = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.interval)) return;
    }
    const bool ok = Probe(address_, options_.timeout);
    failed = ok ? 0 : failed + 1;
    bool changed = false, now = true;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      now = failed < options_.failures;
      changed = now != accepting_;
      accepting_ = now;
    }
    if (changed) {
      LogEvent(now ? "info" : "error",
               now ? "listener accepts connections again"
                   : "listener no longer accepts connections; health set NOT_SERVING",
               {{"address", address_}});
      on_change_(now);
    }
  }
}

bool ListenerProbe::Probe(const std::string& address, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return false;
  const std::unique_ptr<addrinfo, AddrInfoFree> info(found);
  const ScopedFd fd(::socket(info->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;  // out of descriptors: the listener cannot accept either
  if (::connect(fd.get(), info->ai_addr, info->ai_addrlen) != 0 && errno != EINPROGRESS) {
    return false;
  }
  pollfd pending = {fd.get(), POLLOUT, 0};
  if (::poll(&pending, 1, MillisecondsLeft(deadline)) != 1 || (pending.revents & POLLOUT) == 0) {
    return false;
  }
  int error = 0;
  socklen_t size = sizeof(error);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) return false;
  if (::send(fd.get(), kPreface, kPrefaceBytes, MSG_NOSIGNAL) != static_cast<ssize_t>(kPrefaceBytes)) {
    return false;
  }
  // Any reaction means a server accepted the connection: its SETTINGS frame, or the
  // connection closed or reset (a TLS listener refusing a plaintext preface).
  pollfd answer = {fd.get(), POLLIN, 0};
  return ::poll(&answer, 1, MillisecondsLeft(deadline)) == 1;
}

}  // namespace twotower
