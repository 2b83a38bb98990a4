// What the user tower costs per request: for each bundle given, every stored user row (a
// known user: the stored features and history) and the same rows re-encoded from their
// raw history as a new user's request would be (FeatureEncoder::Encode), through
// Tower::Forward one row at a time, as the server's Retrieve does for one request.
//
//   twotower_user_tower_bench --bundles DIR[,DIR...] [--rounds 20]
//
// Prints per bundle: the KIND_HISTORY field's pooling, the mean and p50 / p99 microseconds of
// one Forward of one row, and of the encode + Forward of one request.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bundle/bundle.h"
#include "model/tower.h"

ABSL_FLAG(std::string, bundles, "", "Comma-separated bundle directories (required)");
ABSL_FLAG(int, rounds, 20, "Passes over every stored user");

namespace twotower {
namespace {

using Clock = std::chrono::steady_clock;

struct Timing {
  double mean = 0, p50 = 0, p99 = 0;
};

Timing Summarise(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  Timing t;
  for (double u : us) t.mean += u;
  t.mean /= static_cast<double>(us.size());
  t.p50 = us[us.size() / 2];
  t.p99 = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  return t;
}

int Run(const std::string& dir, int rounds) {
  absl::StatusOr<Bundle> bundle = ReadBundle(dir);
  if (!bundle.ok()) {
    std::fprintf(stderr, "error: %s: %s\n", dir.c_str(), std::string(bundle.status().message()).c_str());
    return 1;
  }
  const TowerModel& user = bundle->user;
  const EncodedTable& rows = bundle->users.rows;
  const int history = user.encoder.HistoryField();
  std::string pooling = "no history";
  if (history > 0) {
    const TowerShape::Field& field = user.tower.shape().fields[history];
    pooling = field.heads > 0 ? "attention, " + std::to_string(field.heads) + " head(s), " +
                                    std::to_string(field.positions) + " positions"
                              : "mean";
  }
  // The raw values a request would carry: the history as item ids (from the encoder's
  // vocabulary), the other features left missing (what matters here is the history).
  std::vector<std::vector<RawValue>> requests;
  for (int r = 0; r < rows.size(); ++r) {
    std::vector<RawValue> values(user.encoder.schema().size());
    if (history > 0) {
      size_t schema_index = 0;
      while (user.encoder.schema()[schema_index].kind() != v1::FeatureSpec::KIND_HISTORY) ++schema_index;
      for (const int32_t token : rows.Field(r, history)) {
        if (token > 0) values[schema_index].tokens.emplace_back(user.encoder.FieldVocabulary(history).tokens()[token - 1]);
      }
    }
    requests.push_back(std::move(values));
  }
  std::vector<float> out(user.tower.output_dim());
  TowerActivations acts;
  EncodedTable one = user.encoder.NewTable();
  std::vector<double> forward_us, request_us;
  for (int round = 0; round < rounds; ++round) {
    for (int r = 0; r < rows.size(); ++r) {
      one.Clear();
      one.AppendRowFrom(rows, r);
      const Clock::time_point start = Clock::now();
      user.tower.Forward(one, &acts, out.data());
      forward_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      one.Clear();
      const Clock::time_point encode = Clock::now();
      user.encoder.Encode(bundle->users.ids[r], &requests[r], &one);
      user.tower.Forward(one, &acts, out.data());
      request_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - encode).count());
    }
  }
  const Timing f = Summarise(forward_us), q = Summarise(request_us);
  std::printf("%s\n  history pooling: %s; %d users x %d rounds\n"
              "  Forward of one stored row: mean %.1f us, p50 %.1f, p99 %.1f\n"
              "  encode + Forward of one request (its history as ids): mean %.1f us, p50 %.1f, p99 %.1f\n",
              dir.c_str(), pooling.c_str(), rows.size(), rounds, f.mean, f.p50, f.p99, q.mean, q.p50, q.p99);
  return 0;
}

}  // namespace
}  // namespace twotower

int main(int argc, char** argv) {
  twotower::InitBenchmark(argc, argv,
                          "User tower latency per request: twotower_user_tower_bench --bundles DIR[,DIR...]");
  const std::string bundles = absl::GetFlag(FLAGS_bundles);
  if (bundles.empty()) {
    std::fprintf(stderr, "error: --bundles is required\n");
    return 2;
  }
  int rc = 0;
  for (const absl::string_view dir : absl::StrSplit(bundles, ',')) {
    rc |= twotower::Run(std::string(dir), std::max(1, absl::GetFlag(FLAGS_rounds)));
  }
  return rc;
}
