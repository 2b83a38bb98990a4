#include "server/server_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "server/grpc_status.h"

namespace twotower {

namespace {

// Seconds, 0.25 ms to 10 s.
const prometheus::Histogram::BucketBoundaries& SecondsBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& QueryBuckets() {
  static const auto* buckets =
      new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384};
  return *buckets;
}

// A family of counters / histograms named `name` with `help`, registered in `registry`.
prometheus::Family<prometheus::Counter>& Counters(prometheus::Registry& registry, const std::string& name,
                                                  const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Histogram>& Histograms(prometheus::Registry& registry, const std::string& name,
                                                      const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
}

}  // namespace

ServerMetrics::ServerMetrics(int latency_window)
    : started_(absl::Now()),
      registry_(std::make_shared<prometheus::Registry>()),
      calls_(Counters(*registry_, "twotower_retrieval_calls_total",
                      "Retrieval calls answered, by method and gRPC status code")),
      call_seconds_(Histograms(*registry_, "twotower_retrieval_call_seconds",
                               "Retrieval calls answered OK: arrival to answer, by method")),
      tower_seconds_(Histograms(*registry_, "twotower_user_tower_seconds",
                                "Per call answered OK: parsing, encoding the users and the user tower")
                         .Add({}, SecondsBuckets())),
      search_seconds_(Histograms(*registry_, "twotower_search_seconds",
                                 "Per call answered OK: the index search (with the wait for its round) "
                                 "and the response")
                          .Add({}, SecondsBuckets())),
      call_queries_(Histograms(*registry_, "twotower_retrieval_call_users",
                               "Users per Retrieval call, by method (1 for Retrieve)")),
      reloads_(Counters(*registry_, "twotower_reloads_total", "ReloadModel calls, by outcome (ok, failed)")),
      window_(static_cast<size_t>(std::max(1, latency_window))) {}

void ServerMetrics::RecordRequest(const Call& call) {
  const bool ok = call.code == absl::StatusCode::kOk;
  requests_total_.fetch_add(1, std::memory_order_relaxed);
  if (!ok) requests_failed_.fetch_add(1, std::memory_order_relaxed);
  const std::string method = call.batch ? "BatchRetrieve" : "Retrieve";
  calls_.Add({{"method", method}, {"code", absl::StatusCodeToString(call.code)}}).Increment();
  if (!ok) return;
  call_seconds_.Add({{"method", method}}, SecondsBuckets()).Observe(absl::ToDoubleSeconds(call.total));
  call_queries_.Add({{"method", method}}, QueryBuckets()).Observe(static_cast<double>(call.queries));
  tower_seconds_.Observe(absl::ToDoubleSeconds(call.tower));
  search_seconds_.Observe(absl::ToDoubleSeconds(call.search));
}

void ServerMetrics::RecordReload(bool ok) {
  reloads_total_.fetch_add(1, std::memory_order_relaxed);
  if (!ok) reloads_failed_.fetch_add(1, std::memory_order_relaxed);
  reloads_.Add({{"outcome", ok ? "ok" : "failed"}}).Increment();
}

void ServerMetrics::RecordRetrieveLatency(absl::Duration latency) {
  const double ms = absl::ToDoubleMilliseconds(latency);
  absl::MutexLock lock(&mu_);
  if (latencies_ms_.size() < window_) {
    latencies_ms_.push_back(ms);
  } else {
    latencies_ms_[next_] = ms;
  }
  next_ = (next_ + 1) % window_;
}

ServerMetrics::LatencySummary ServerMetrics::RetrieveLatency() const {
  std::vector<double> sorted;
  {
    absl::MutexLock lock(&mu_);
    sorted = latencies_ms_;
  }
  LatencySummary summary;
  if (sorted.empty()) return summary;
  std::sort(sorted.begin(), sorted.end());
  // Nearest-rank percentile: the smallest value with at least p of the samples <= it.
  const auto at = [&sorted](double p) {
    const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
  };
  summary.p50_ms = at(0.50);
  summary.p90_ms = at(0.90);
  summary.p99_ms = at(0.99);
  summary.max_ms = sorted.back();
  return summary;
}

namespace {

constexpr size_t kMaxLoggedValueBytes = 2048;

void AppendValue(std::string_view value, std::string* line) {
  const bool quote = value.empty() || value.find_first_of(" \t\"=\n") != std::string_view::npos;
  if (!quote) {
    line->append(value);
    return;
  }
  line->push_back('"');
  // Values may quote client input: a bounded line per event, whatever the client sent.
  const std::string bounded = Truncated(value, kMaxLoggedValueBytes);
  for (const char c : bounded) {
    if (c == '"' || c == '\\') line->push_back('\\');
    if (c == '\n') {
      line->append("\\n");
      continue;
    }
    line->push_back(c);
  }
  line->push_back('"');
}

}  // namespace

void LogEvent(std::string_view level, std::string_view msg,
              std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  // std::string_view is not absl::string_view in this Abseil build, so no StrCat here.
  std::string line = "ts=";
  line += absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line += " level=";
  line += level;
  line += " msg=";
  AppendValue(msg, &line);
  for (const auto& [key, value] : fields) {
    line += ' ';
    line += key;
    line += '=';
    AppendValue(value, &line);
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
}

namespace {

// At most kLibraryLogsPerMinute library messages are written per minute; the others are
// counted and reported with the next one written.
constexpr int kLibraryLogsPerMinute = 20;
absl::Mutex library_log_mu;
absl::Time library_log_window ABSL_GUARDED_BY(library_log_mu) = absl::InfinitePast();
int library_logs_written ABSL_GUARDED_BY(library_log_mu) = 0;
int64_t library_logs_dropped ABSL_GUARDED_BY(library_log_mu) = 0;

// True when a message may be written now; *dropped is how many were not since the last.
bool MayLog(int64_t* dropped) {
  absl::MutexLock lock(&library_log_mu);
  const absl::Time now = absl::Now();
  if (now - library_log_window >= absl::Minutes(1)) {
    library_log_window = now;
    library_logs_written = 0;
  }
  if (library_logs_written >= kLibraryLogsPerMinute) {
    ++library_logs_dropped;
    return false;
  }
  ++library_logs_written;
  *dropped = std::exchange(library_logs_dropped, 0);
  return true;
}

void OnProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                   const std::string& message) {
  int64_t dropped = 0;
  if (!MayLog(&dropped)) return;
  LogEvent(level >= google::protobuf::LOGLEVEL_ERROR ? "warn" : "info", "protobuf",
           {{"message", message},
            {"at", absl::StrCat(filename == nullptr ? "" : filename, ":", line)},
            {"dropped_before", absl::StrCat(dropped)}});
}

void OnGrpcLog(gpr_log_func_args* args) {
  int64_t dropped = 0;
  if (!MayLog(&dropped)) return;
  LogEvent(args->severity == GPR_LOG_SEVERITY_ERROR ? "warn" : "info", "grpc",
           {{"message", args->message == nullptr ? "" : args->message},
            {"at", absl::StrCat(args->file == nullptr ? "" : args->file, ":", args->line)},
            {"dropped_before", absl::StrCat(dropped)}});
}

}  // namespace

void RateLimitLibraryLogs() {
  google::protobuf::SetLogHandler(&OnProtobufLog);
  gpr_set_log_function(&OnGrpcLog);
}

}  // namespace twotower
