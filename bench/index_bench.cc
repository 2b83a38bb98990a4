// twotower_index_bench: recall and latency of ANN indexes against exact search, so an
// operator can pick an --index for the server.
//
//   twotower_index_bench --bundle bundles/latest                 # the bundle's items; queries
//                                                                # = the bundle's user vectors
//   twotower_index_bench --synthetic_items 1000000 --dim 64      # clustered random vectors
//
// For each index (--indexes, ';'-separated FAISS factory strings, inner product) and each
// search setting (--ef_search for HNSW, --nprobe for IVF) it prints the build time, the
// bytes per item the index holds (ItemIndex::MemoryBytes: "Flat" 6 x dim with its fp16
// copy, SQ8 1 x dim, PQ<m> m, IVF adding FAISS's 8-byte id per item; the server adds the
// item's id and attribute postings, ~25 bytes at 7-character ids, and the model),
// Recall@k against exact search, single-query latency p50 / p99, and how often the index
// fell back (ItemIndex::Counters): "short" = queries its first search left with fewer
// than min(k, eligible) rows, searched again wider; "exact" = of those (HNSW), answered
// by the exact scan. Every query must come back with as many rows as the exact search
// ("full"). --filter_fraction restricts every query to a random subset of the items (an
// attribute filter). It also prints the memory-bandwidth floor of an exact scan: one
// pass reading the whole item matrix.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bundle/bundle.h"
#include "index/item_index.h"
#include "model/tower.h"

ABSL_FLAG(std::string, bundle, "", "Bundle directory (items + user queries)");
ABSL_FLAG(int, synthetic_items, 0, "Instead of a bundle: this many clustered random items");
ABSL_FLAG(int, dim, 64, "Dimension of synthetic vectors");
ABSL_FLAG(double, cluster_noise, 0.3,
          "Synthetic vectors: per-dimension noise around their centre before normalising (the "
          "cluster radius is noise x sqrt(dim): 0.3 at 64-d is 2.4, wider than the distance "
          "between centres, i.e. barely clustered; 0.1 gives distinct clusters)");
ABSL_FLAG(int, queries, 200, "Queries to time");
ABSL_FLAG(int, k, 100, "Results per query (Recall@k)");
ABSL_FLAG(std::string, indexes, "Flat;HNSW32,Flat;IVF1024,Flat", "';'-separated factories");
ABSL_FLAG(std::string, ef_search, "64,128,256,512", "HNSW efSearch values to try");
ABSL_FLAG(std::string, nprobe, "8,32,128", "IVF nprobe values to try");
ABSL_FLAG(double, filter_fraction, 0,
          "If > 0: every query may return only this fraction of the items (a random subset, "
          "the same for all queries), as an attribute filter would");

namespace twotower {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

void Normalise(std::vector<float>& v, int dim) {
  for (size_t r = 0; r < v.size() / dim; ++r) {
    double sq = 0;
    for (int k = 0; k < dim; ++k) sq += v[r * dim + k] * v[r * dim + k];
    const float inv = static_cast<float>(1 / std::sqrt(std::max(sq, 1e-12)));
    for (int k = 0; k < dim; ++k) v[r * dim + k] *= inv;
  }
}

// Clustered unit vectors: 1000 centres, items and queries near them (--cluster_noise).
void Synthetic(int items, int queries, int dim, std::vector<float>* x, std::vector<float>* q) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal;
  const int centres = 1000;
  std::vector<float> c(static_cast<size_t>(centres) * dim);
  for (float& v : c) v = normal(rng);
  Normalise(c, dim);
  const auto fill = [&](std::vector<float>* out, int n, float noise) {
    out->resize(static_cast<size_t>(n) * dim);
    for (int i = 0; i < n; ++i) {
      const float* centre = c.data() + (rng() % centres) * dim;
      for (int k = 0; k < dim; ++k) (*out)[static_cast<size_t>(i) * dim + k] = centre[k] + noise * normal(rng);
    }
    Normalise(*out, dim);
  };
  const float noise = static_cast<float>(absl::GetFlag(FLAGS_cluster_noise));
  fill(x, items, noise);
  fill(q, queries, noise);
}

std::vector<int> Ints(const std::string& list) {
  std::vector<int> out;
  for (absl::string_view s : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(s, &v)) out.push_back(v);
  }
  return out;
}

int Run() {
  std::vector<float> items, queries;
  std::vector<std::string> ids;
  int dim = absl::GetFlag(FLAGS_dim);
  const int nq = absl::GetFlag(FLAGS_queries), k = absl::GetFlag(FLAGS_k);
  if (!absl::GetFlag(FLAGS_bundle).empty()) {
    absl::StatusOr<Bundle> bundle = ReadBundle(absl::GetFlag(FLAGS_bundle));
    if (!bundle.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(bundle.status().message()).c_str());
      return 1;
    }
    dim = bundle->embedding_dim();
    items = bundle->item_vectors;
    ids = bundle->items.ids;
    EncodedTable users = bundle->user.encoder.NewTable();
    for (int r = 0; r < std::min(nq, bundle->users.rows.size()); ++r) users.AppendRowFrom(bundle->users.rows, r);
    queries = bundle->user.tower.EmbedAll(users);
  } else if (absl::GetFlag(FLAGS_synthetic_items) > 0) {
    Synthetic(absl::GetFlag(FLAGS_synthetic_items), nq, dim, &items, &queries);
  } else {
    std::fprintf(stderr, "error: give --bundle or --synthetic_items\n");
    return 2;
  }
  const int n = static_cast<int>(items.size() / dim);
  const int queries_n = static_cast<int>(queries.size() / dim);
  if (ids.empty()) {
    for (int i = 0; i < n; ++i) ids.push_back(std::to_string(i));
  }
  std::printf("%d items, dim %d, %d queries, k %d\n", n, dim, queries_n, k);
  // The filter (--filter_fraction): one random subset of the rows for every query.
  const double fraction = absl::GetFlag(FLAGS_filter_fraction);
  std::vector<uint8_t> allowed;
  std::vector<RowFilter> filters;  // empty, or one per query
  if (fraction > 0) {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> uniform;
    allowed.resize(n);
    int count = 0;
    for (int r = 0; r < n; ++r) count += allowed[r] = uniform(rng) < fraction ? 1 : 0;
    filters.resize(queries_n);
    for (RowFilter& f : filters) f.allowed = &allowed;
    std::printf("filter: %d of %d items eligible\n", count, n);
  }

  // Memory-bandwidth floor: read every float of the matrix once.
  double best_ms = 1e30, sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const Clock::time_point t = Clock::now();
    // 16 independent lanes so the compiler can vectorise without reassociating.
    float lanes[16] = {};
    const size_t whole = items.size() / 16 * 16;
    for (size_t i = 0; i < whole; i += 16) {
      for (int l = 0; l < 16; ++l) lanes[l] += items[i + l];
    }
    best_ms = std::min(best_ms, Ms(t));
    for (float l : lanes) sink += l;
  }
  std::printf("bandwidth floor: %.3f ms per full scan (%.1f GB/s, 1 thread)%s\n", best_ms,
              items.size() * sizeof(float) / best_ms / 1e6, sink == 12345 ? " " : "");

  // Exact ground truth.
  absl::StatusOr<std::unique_ptr<ItemIndex>> exact = ItemIndex::Build(ids, items, dim, {"Flat", 0, 0});
  if (!exact.ok()) return 1;
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> truth = (*exact)->Search(queries.data(), queries_n, k, filters);
  if (!truth.ok()) return 1;

  std::printf("%-22s %-12s %9s %8s %10s %10s %10s %8s %8s %8s\n", "index", "param", "build_s", "B/item", "recall@k",
              "p50_ms", "p99_ms", "short", "exact", "full");
  for (absl::string_view factory_view : absl::StrSplit(absl::GetFlag(FLAGS_indexes), ';', absl::SkipEmpty())) {
    const std::string factory(factory_view);
    const bool hnsw = factory.find("HNSW") != std::string::npos;
    const bool ivf = factory.find("IVF") != std::string::npos;
    std::vector<int> settings = hnsw ? Ints(absl::GetFlag(FLAGS_ef_search)) : ivf ? Ints(absl::GetFlag(FLAGS_nprobe)) : std::vector<int>{0};
    // Built once per factory; the search parameter is swept on the same index.
    const Clock::time_point build_start = Clock::now();
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(ids, items, dim, {factory, 0, 0});
    const double build_s = Ms(build_start) / 1000;
    if (!index.ok()) {
      std::printf("%-22s error: %s\n", factory.c_str(), std::string(index.status().message()).c_str());
      continue;
    }
    for (int setting : settings) {
      if (absl::Status s = (*index)->SetSearchParams(hnsw ? setting : 0, ivf ? setting : 0); !s.ok()) {
        std::printf("%-22s error: %s\n", factory.c_str(), std::string(s.message()).c_str());
        continue;
      }
      const ItemIndex::Counters before = (*index)->counters();
      std::vector<double> latencies;
      double recall = 0;
      int full = 0;
      for (int q = 0; q < queries_n; ++q) {
        const std::span<const RowFilter> filter =
            filters.empty() ? std::span<const RowFilter>() : std::span<const RowFilter>(&filters[q], 1);
        const Clock::time_point t = Clock::now();
        absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
            (*index)->Search(queries.data() + static_cast<size_t>(q) * dim, 1, k, filter);
        latencies.push_back(Ms(t));
        if (!hits.ok()) return 1;
        full += (*hits)[0].size() == (*truth)[q].size();
        absl::flat_hash_set<int32_t> expected;
        for (const ItemIndex::Hit& h : (*truth)[q]) expected.insert(h.row);
        int found = 0;
        for (const ItemIndex::Hit& h : (*hits)[0]) found += expected.contains(h.row);
        recall += static_cast<double>(found) / std::max<size_t>(1, expected.size());
      }
      std::sort(latencies.begin(), latencies.end());
      const auto pct = [&](double p) { return latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * latencies.size()))]; };
      const ItemIndex::Counters after = (*index)->counters();
      std::printf("%-22s %-12s %9.2f %8.1f %10.4f %10.3f %10.3f %8lld %8lld %4d/%d\n", factory.c_str(),
                  hnsw ? ("ef=" + std::to_string(setting)).c_str() : ivf ? ("nprobe=" + std::to_string(setting)).c_str() : "-",
                  build_s, static_cast<double>((*index)->MemoryBytes()) / n, recall / queries_n, pct(0.5), pct(0.99),
                  static_cast<long long>(after.widened - before.widened),
                  static_cast<long long>(after.exact - before.exact), full, queries_n);
      if (!hnsw && !ivf) break;  // one row for exact indexes; ANN: one build per setting
    }
  }
  return 0;
}

}  // namespace
}  // namespace twotower

int main(int argc, char** argv) {
  twotower::InitBenchmark(argc, argv,
                          "ANN recall and latency: twotower_index_bench --bundle DIR | --synthetic_items N");
  return twotower::Run();
}
