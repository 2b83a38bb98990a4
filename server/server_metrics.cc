#include "server/server_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/time/clock.h"

namespace twotower {

ServerMetrics::ServerMetrics(int latency_window)
    : started_(absl::Now()), window_(static_cast<size_t>(std::max(1, latency_window))) {}

void ServerMetrics::RecordRequest(bool ok) {
  requests_total_.fetch_add(1, std::memory_order_relaxed);
  if (!ok) requests_failed_.fetch_add(1, std::memory_order_relaxed);
}

void ServerMetrics::RecordReload(bool ok) {
  reloads_total_.fetch_add(1, std::memory_order_relaxed);
  if (!ok) reloads_failed_.fetch_add(1, std::memory_order_relaxed);
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

void AppendValue(std::string_view value, std::string* line) {
  const bool quote = value.empty() || value.find_first_of(" \t\"=\n") != std::string_view::npos;
  if (!quote) {
    line->append(value);
    return;
  }
  line->push_back('"');
  for (const char c : value) {
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

}  // namespace twotower
