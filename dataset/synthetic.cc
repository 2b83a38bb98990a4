#include "dataset/synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "dataset/table_reader.h"
#include "util/file.h"
#include "util/random.h"

namespace twotower {

namespace {

// The draws the generator needs, on util/random.h (identical on every standard library).
class Draws {
 public:
  explicit Draws(uint64_t seed) : rng_(seed) {}
  double Uniform() { return UniformDouble(rng_); }
  int Below(int n) { return static_cast<int>(Uniform() * n); }
  bool Bernoulli(double p) { return Uniform() < p; }
  double Gumbel() { return -std::log(-std::log(Uniform() * (1 - 1e-12) + 1e-13)); }
  double Normal() { return StandardNormal(rng_); }

 private:
  Rng rng_;
};

std::string UserId(int u) { return absl::StrFormat("u%05d", u); }
std::string ItemId(int i) { return absl::StrFormat("item-%04d", i); }
std::string Genre(int c) { return absl::StrCat("g", c); }

}  // namespace

absl::Status WriteSyntheticDataset(const SyntheticOptions& o, const std::string& out_dir) {
  // Upper bounds too: the tables are built in memory (a huge count would end in
  // std::bad_alloc, not an error).
  constexpr int kMaxEntities = 10'000'000, kMaxClusters = 1000, kMaxClicks = 10000;
  if (o.users < 10 || o.items < 10 || o.clusters < 2 || o.min_clicks < 2 ||
      o.max_clicks < o.min_clicks || o.max_clicks > o.items || o.users > kMaxEntities ||
      o.items > kMaxEntities || o.clusters > kMaxClusters || o.max_clicks > kMaxClicks) {
    return absl::InvalidArgumentError(
        "synthetic: need 10 <= users, items <= 10000000, 2 <= clusters <= 1000, "
        "2 <= min_clicks <= max_clicks <= min(items, 10000)");
  }
  Draws rng(o.seed);

  // Items: cluster, genres (cluster genre + maybe one more), brand, price, popularity.
  std::vector<int> item_cluster(o.items);
  std::vector<double> item_log_pop(o.items);
  std::string items_csv = FormatCsvRow({"item_id", "genres", "brand", "price"});
  std::vector<int> pop_rank(o.items);
  std::iota(pop_rank.begin(), pop_rank.end(), 0);
  for (int i = o.items - 1; i > 0; --i) std::swap(pop_rank[i], pop_rank[rng.Below(i + 1)]);
  for (int i = 0; i < o.items; ++i) {
    item_cluster[i] = rng.Below(o.clusters);
    item_log_pop[i] = -0.8 * std::log(1.0 + pop_rank[i]);  // Zipf-like popularity
    std::vector<std::string> genres = {Genre(item_cluster[i])};
    if (rng.Bernoulli(0.3)) {
      const int extra = rng.Below(o.clusters);
      if (extra != item_cluster[i]) genres.push_back(Genre(extra));
    }
    items_csv += FormatCsvRow({ItemId(i), absl::StrJoin(genres, "|"),
                               absl::StrCat("b", rng.Below(20)),
                               absl::StrFormat("%.2f", std::exp(2.0 + rng.Normal()))});
  }

  std::string users_csv = FormatCsvRow({"user_id", "segment", "age", "region", "interests"});
  const std::string header = FormatCsvRow({"user_id", "item_id", "timestamp"});
  std::string train_csv = header, warm_csv = header, cold_csv = header;
  std::vector<double> scores(o.items);
  std::vector<int> order(o.items);
  int64_t clock = 1700000000;
  for (int u = 0; u < o.users; ++u) {
    const int primary = rng.Below(o.clusters);
    int secondary = rng.Below(o.clusters - 1);
    if (secondary >= primary) ++secondary;
    const int segment = rng.Bernoulli(0.7) ? primary : rng.Below(o.clusters);
    std::vector<std::string> interests;
    if (rng.Bernoulli(0.8)) interests.push_back(Genre(primary));
    if (rng.Bernoulli(0.5)) interests.push_back(Genre(secondary));
    if (rng.Bernoulli(0.3)) interests.push_back(Genre(rng.Below(o.clusters)));
    std::sort(interests.begin(), interests.end());
    interests.erase(std::unique(interests.begin(), interests.end()), interests.end());
    users_csv += FormatCsvRow({UserId(u), absl::StrCat("s", segment),
                               absl::StrCat(18 + rng.Below(50)), absl::StrCat("r", rng.Below(10)),
                               absl::StrJoin(interests, "|")});

    // Clicks: Gumbel top-n = n draws without replacement from the softmax.
    const int n = o.min_clicks + rng.Below(o.max_clicks - o.min_clicks + 1);
    for (int i = 0; i < o.items; ++i) {
      const double affinity = item_cluster[i] == primary     ? o.affinity
                              : item_cluster[i] == secondary ? 0.5 * o.affinity
                                                             : 0.0;
      scores[i] = affinity + item_log_pop[i] + rng.Gumbel();
    }
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int a, int b) { return scores[a] > scores[b]; });
    // The draw order is also the time order: random, unrelated to the score rank.
    for (int j = n - 1; j > 0; --j) std::swap(order[j], order[rng.Below(j + 1)]);
    const bool cold = rng.Bernoulli(o.cold_user_fraction);
    const int n_test = std::max(1, static_cast<int>(n * o.test_fraction));
    for (int j = 0; j < n; ++j) {
      const std::string row = FormatCsvRow({UserId(u), ItemId(order[j]), absl::StrCat(clock++)});
      if (cold) {
        cold_csv += row;
      } else if (j >= n - n_test) {
        warm_csv += row;
      } else {
        train_csv += row;
      }
    }
  }

  const std::pair<const char*, const std::string*> files[] = {
      {"users.csv", &users_csv}, {"items.csv", &items_csv}, {"train.csv", &train_csv},
      {"test_warm.csv", &warm_csv}, {"test_cold.csv", &cold_csv}};
  for (const auto& [name, contents] : files) {
    if (absl::Status s = WriteFileDurably(absl::StrCat(out_dir, "/", name), *contents); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace twotower
