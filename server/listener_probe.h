// Watches that a listening socket still accepts connections, from the outside: every
// `interval` it connects to the address, sends the HTTP/2 client preface and waits up to
// `timeout` for any reaction (bytes, or the connection closed, as a TLS listener does
// with a plaintext preface). A listener that no longer accepts leaves the connection
// unanswered in its backlog. gRPC 1.51 stops accepting for good once an accept fails
// (EMFILE: out of descriptors), while the process, its other listeners and calls on
// open connections carry on, so nothing else would notice.
//
// After `failures` probes in a row fail, `on_change(false)` is called; after the next
// success, `on_change(true)`. on_change runs on the probe's thread.
#ifndef TWOTOWER_SERVER_LISTENER_PROBE_H_
#define TWOTOWER_SERVER_LISTENER_PROBE_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace twotower {

class ListenerProbe {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(2);
    absl::Duration timeout = absl::Seconds(2);
    int failures = 3;
  };
  // `address` is host:port as bound ("0.0.0.0" and "[::]" are probed on loopback).
  ListenerProbe(std::string address, Options options, std::function<void(bool)> on_change);
  // Stops the probe (waits for a probe in progress to end).
  ~ListenerProbe();
  ListenerProbe(const ListenerProbe&) = delete;
  ListenerProbe& operator=(const ListenerProbe&) = delete;

  // Whether the last probes say the listener accepts (true until `failures` fail).
  bool accepting() const ABSL_LOCKS_EXCLUDED(mu_);

  // One probe, now: true if the listener at `address` reacted within `timeout`.
  static bool Probe(const std::string& address, absl::Duration timeout);

 private:
  void Run();

  const std::string address_;
  const Options options_;
  const std::function<void(bool)> on_change_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  std::thread thread_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_LISTENER_PROBE_H_
