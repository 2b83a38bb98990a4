// What the server tells operators about itself: request / reload counters and recent
// Retrieve latencies (reported by Admin.GetStatus), the same as Prometheus metrics
// (registry(), served over HTTP by --metrics_address; names in docs/DEPLOY.md), plus the
// structured log lines it writes to stderr. Everything here is safe to call from any
// thread.
#ifndef TWOTOWER_SERVER_SERVER_METRICS_H_
#define TWOTOWER_SERVER_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace twotower {

class ServerMetrics {
 public:
  struct LatencySummary {
    double p50_ms = 0.0;
    double p90_ms = 0.0;
    double p99_ms = 0.0;
    double max_ms = 0.0;
  };

  // Latency percentiles cover the last `latency_window` successful Retrieve calls: recent
  // behaviour, in bounded memory.
  explicit ServerMetrics(int latency_window = 4096);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Counts one call (any service) as in flight while it lives. Shutdown waits for the
  // count to reach zero: gRPC's own drain also waits for idle clients to hang up, which
  // some never do before the deadline.
  class InFlightCall {
   public:
    explicit InFlightCall(ServerMetrics* metrics) : metrics_(metrics) {
      metrics_->in_flight_.fetch_add(1, std::memory_order_relaxed);
    }
    ~InFlightCall() { metrics_->in_flight_.fetch_sub(1, std::memory_order_release); }
    InFlightCall(const InFlightCall&) = delete;
    InFlightCall& operator=(const InFlightCall&) = delete;

   private:
    ServerMetrics* const metrics_;
  };
  int64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // One Retrieval RPC (Retrieve or BatchRetrieve) finished.
  struct Call {
    bool batch = false;
    absl::StatusCode code = absl::StatusCode::kOk;
    int64_t queries = 0;             // users in the call
    absl::Duration total;            // arrival to answer
    absl::Duration tower;            // parse, encode and user tower (zero if not reached)
    absl::Duration search;           // index search and response (zero if not reached)
  };
  void RecordRequest(const Call& call);
  // Latency of one successful Retrieve (single user; batches would skew the percentiles).
  void RecordRetrieveLatency(absl::Duration latency) ABSL_LOCKS_EXCLUDED(mu_);
  // One ReloadModel call finished.
  void RecordReload(bool ok);

  int64_t requests_total() const { return requests_total_.load(std::memory_order_relaxed); }
  int64_t requests_failed() const { return requests_failed_.load(std::memory_order_relaxed); }
  int64_t reloads_total() const { return reloads_total_.load(std::memory_order_relaxed); }
  int64_t reloads_failed() const { return reloads_failed_.load(std::memory_order_relaxed); }
  // Zeros when nothing was recorded yet.
  LatencySummary RetrieveLatency() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Duration uptime() const { return absl::Now() - started_; }
  // The Prometheus metrics recorded here (counters and histograms; gauges of the serving
  // state are collected at scrape time by the server).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  const absl::Time started_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> requests_total_{0};
  std::atomic<int64_t> requests_failed_{0};
  std::atomic<int64_t> reloads_total_{0};
  std::atomic<int64_t> reloads_failed_{0};

  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Histogram>& call_seconds_;
  prometheus::Histogram& tower_seconds_;
  prometheus::Histogram& search_seconds_;
  prometheus::Family<prometheus::Histogram>& call_queries_;
  prometheus::Family<prometheus::Counter>& reloads_;

  mutable absl::Mutex mu_;
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);  // ring buffer
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  const size_t window_;
};

// Writes one logfmt line to stderr in a single write, so lines from different threads
// do not interleave:
//   ts=2026-01-02T03:04:05.678Z level=info msg="model reloaded" version=... seconds=0.41
// Values with spaces, quotes or '=' are quoted.
void LogEvent(std::string_view level, std::string_view msg,
              std::initializer_list<std::pair<std::string_view, std::string>> fields = {});

// Routes the log messages of the protobuf and gRPC libraries (e.g. one per request that
// holds a string that is not UTF-8, or that is compressed) to LogEvent, at most a few per
// minute: clients cannot flood the log. Call once at start.
void RateLimitLibraryLogs();

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SERVER_METRICS_H_
