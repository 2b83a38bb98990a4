#include "index/item_index.h"

#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"

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
  try {
    index->index_.reset(
        faiss::index_factory(dim, options.factory.c_str(), faiss::METRIC_INNER_PRODUCT));
    const faiss::Index::idx_t n = static_cast<faiss::Index::idx_t>(index->ids_.size());
    if (!index->index_->is_trained) index->index_->train(n, vectors.data());
    index->index_->add(n, vectors.data());
    if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index->index_.get());
        hnsw != nullptr && options.ef_search > 0) {
      hnsw->hnsw.efSearch = options.ef_search;
    }
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index->index_.get());
        ivf != nullptr && options.nprobe > 0) {
      ivf->nprobe = options.nprobe;
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("index \"", options.factory, "\": ", e.what()));
  }
  return index;
}

absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> ItemIndex::Search(
    const float* queries, int n, int k,
    const std::vector<absl::flat_hash_set<int32_t>>* excluded) const {
  if (k < 1) return absl::InvalidArgumentError("k must be >= 1");
  size_t max_excluded = 0;
  if (excluded != nullptr) {
    for (const auto& set : *excluded) max_excluded = std::max(max_excluded, set.size());
  }
  const int fetch = static_cast<int>(std::min<size_t>(k + max_excluded, ids_.size()));
  std::vector<std::vector<Hit>> results(n);
  if (fetch == 0 || n == 0) return results;
  std::vector<float> scores(static_cast<size_t>(n) * fetch);
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(n) * fetch);
  try {
    index_->search(n, queries, fetch, scores.data(), labels.data());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("index search: ", e.what()));
  }
  for (int q = 0; q < n; ++q) {
    std::vector<Hit>& hits = results[q];
    for (int j = 0; j < fetch && static_cast<int>(hits.size()) < k; ++j) {
      const faiss::Index::idx_t label = labels[static_cast<size_t>(q) * fetch + j];
      if (label < 0) continue;  // fewer results than asked (ANN)
      const int32_t row = static_cast<int32_t>(label);
      if (excluded != nullptr && (*excluded)[q].contains(row)) continue;
      hits.push_back({row, scores[static_cast<size_t>(q) * fetch + j]});
    }
  }
  return results;
}

}  // namespace twotower
