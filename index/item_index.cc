#include "index/item_index.h"

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "index/exact_scan.h"

namespace twotower {

ItemIndex::~ItemIndex() = default;

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::Build(std::vector<std::string> ids,
                                                            const std::vector<float>& vectors,
                                                            int dim, const IndexOptions& options) {
  if (dim < 1) return absl::InvalidArgumentError("index: dim must be >= 1");
  if (vectors.size() != ids.size() * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError("index: vectors do not match ids x dim");
  }
  std::unique_ptr<ItemIndex> index(new ItemIndex());  // private constructor
  index->ids_ = std::move(ids);
  index->dim_ = dim;
  index->options_ = options;
  if (options.factory == "Flat") {
    index->exact_vectors_ = HugePageFloats(vectors);
    if (options.half_first_pass) index->exact_halves_ = HalfRows::Of(vectors, dim);
    // options() reports what the index has: no copy where it could not be made.
    index->options_.half_first_pass = index->exact_halves_.has_value();
    return index;
  }
  index->options_.half_first_pass = false;  // FAISS indexes: no fp16 pass
  try {
    index->index_.reset(
        faiss::index_factory(dim, options.factory.c_str(), faiss::METRIC_INNER_PRODUCT));
    const faiss::Index::idx_t n = static_cast<faiss::Index::idx_t>(index->ids_.size());
    if (!index->index_->is_trained) index->index_->train(n, vectors.data());
    index->index_->add(n, vectors.data());
    index->supports_selector_ = dynamic_cast<faiss::IndexFlat*>(index->index_.get()) != nullptr ||
                                dynamic_cast<faiss::IndexIVF*>(index->index_.get()) != nullptr;
    index->SetSearchParams(options.ef_search, options.nprobe);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("index \"", options.factory, "\": ", e.what()));
  }
  return index;
}

void ItemIndex::SetSearchParams(int ef_search, int nprobe) {
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index_.get()); hnsw != nullptr && ef_search > 0) {
    hnsw->hnsw.efSearch = ef_search;
    options_.ef_search = ef_search;
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get()); ivf != nullptr && nprobe > 0) {
    ivf->nprobe = nprobe;
    options_.nprobe = nprobe;
  }
}

namespace {

// Adapts a RowFilter to FAISS.
class RowSelector : public faiss::IDSelector {
 public:
  explicit RowSelector(const RowFilter& filter) : filter_(filter) {}
  bool is_member(faiss::Index::idx_t id) const override {
    return filter_.Allows(static_cast<int32_t>(id));
  }

 private:
  const RowFilter& filter_;
};

}  // namespace

absl::Status ItemIndex::RawSearch(const float* queries, int n, int fetch, const RowFilter* filter,
                                  std::vector<float>* scores, std::vector<int64_t>* labels) const {
  scores->resize(static_cast<size_t>(n) * fetch);
  labels->resize(static_cast<size_t>(n) * fetch);
  static_assert(sizeof(int64_t) == sizeof(faiss::Index::idx_t));
  auto* out = reinterpret_cast<faiss::Index::idx_t*>(labels->data());
  try {
    if (filter == nullptr || !supports_selector_) {
      index_->search(n, queries, fetch, scores->data(), out);
      return absl::OkStatus();
    }
    RowSelector selector(*filter);
    if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get())) {
      faiss::SearchParametersIVF params;
      params.sel = &selector;
      params.nprobe = ivf->nprobe;
      index_->search(n, queries, fetch, scores->data(), out, &params);
    } else {
      faiss::SearchParameters params;
      params.sel = &selector;
      index_->search(n, queries, fetch, scores->data(), out, &params);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("index search: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> ItemIndex::Search(
    const float* queries, int n, int k, std::span<const RowFilter> filters) const {
  if (k < 1) return absl::InvalidArgumentError("k must be >= 1");
  if (!filters.empty() && filters.size() != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError("index search: one filter per query");
  }
  const int total = size();
  std::vector<std::vector<Hit>> results(n);
  if (total == 0 || n == 0) return results;
  if (index_ == nullptr) {  // "Flat": our exact scan, filters applied inside it
    std::vector<std::vector<ScanHit>> hits =
        ExactTopK(exact_vectors_.data(), total, dim_, queries, n, k, filters, ScanKernel::kAuto,
                  exact_halves_.has_value() ? &*exact_halves_ : nullptr);
    for (int q = 0; q < n; ++q) {
      results[q].reserve(hits[q].size());
      for (const ScanHit& hit : hits[q]) results[q].push_back({hit.row, hit.score});
    }
    return results;
  }
  std::vector<float> scores;
  std::vector<int64_t> labels;
  const auto collect = [&](int q, int row_in_batch, int fetch, const RowFilter* filter) {
    std::vector<Hit>& hits = results[q];
    hits.clear();
    for (int j = 0; j < fetch && static_cast<int>(hits.size()) < k; ++j) {
      const size_t at = static_cast<size_t>(row_in_batch) * fetch + j;
      if (labels[at] < 0) continue;  // fewer results than asked
      const int32_t row = static_cast<int32_t>(labels[at]);
      if (filter != nullptr && !filter->Allows(row)) continue;
      hits.push_back({row, scores[at]});
    }
  };

  // Unfiltered queries: one batched search.
  std::vector<int> plain;
  std::vector<float> plain_queries;
  for (int q = 0; q < n; ++q) {
    if (!filters.empty() && !filters[q].empty()) continue;
    plain.push_back(q);
    plain_queries.insert(plain_queries.end(), queries + static_cast<size_t>(q) * dim_,
                         queries + static_cast<size_t>(q + 1) * dim_);
  }
  if (!plain.empty()) {
    const int fetch = std::min(k, total);
    if (absl::Status s = RawSearch(plain_queries.data(), static_cast<int>(plain.size()), fetch,
                                   nullptr, &scores, &labels);
        !s.ok()) {
      return s;
    }
    for (size_t i = 0; i < plain.size(); ++i) collect(plain[i], static_cast<int>(i), fetch, nullptr);
  }

  // Filtered queries, one at a time (each has its own filter).
  for (int q = 0; q < n && !filters.empty(); ++q) {
    const RowFilter& filter = filters[q];
    if (filter.empty()) continue;
    const float* query = queries + static_cast<size_t>(q) * dim_;
    if (supports_selector_) {
      const int fetch = std::min(k, total);
      if (absl::Status s = RawSearch(query, 1, fetch, &filter, &scores, &labels); !s.ok()) return s;
      collect(q, 0, fetch, &filter);
      continue;
    }
    // Over-fetch and post-filter, widening until k eligible rows or the whole index.
    int eligible = 0;
    for (int row = 0; row < total && eligible < k; ++row) eligible += filter.Allows(row);
    const int excluded = (filter.excluded != nullptr ? static_cast<int>(filter.excluded->size()) : 0) +
                         (filter.removed != nullptr ? static_cast<int>(filter.removed->size()) : 0);
    int fetch = std::min(total, std::max(2 * k, k + excluded));
    while (true) {
      if (absl::Status s = RawSearch(query, 1, fetch, nullptr, &scores, &labels); !s.ok()) return s;
      collect(q, 0, fetch, &filter);
      if (static_cast<int>(results[q].size()) >= std::min(k, eligible) || fetch >= total) break;
      fetch = std::min(total, fetch * 4);
    }
  }
  return results;
}

absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> ItemIndex::Search(
    const float* queries, int n, int k,
    const std::vector<absl::flat_hash_set<int32_t>>* excluded) const {
  std::vector<RowFilter> filters;
  if (excluded != nullptr) {
    filters.resize(n);
    for (int q = 0; q < n; ++q) filters[q].excluded = &(*excluded)[q];
  }
  return Search(queries, n, k, filters);
}

}  // namespace twotower
