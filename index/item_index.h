// The item index: FAISS inner-product search over the item vectors, with FAISS row ids
// mapped back to item ids. FAISS reports errors by throwing; they are caught here and
// become Status values, so no exception leaves this module.
#ifndef TWOTOWER_INDEX_ITEM_INDEX_H_
#define TWOTOWER_INDEX_ITEM_INDEX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace faiss {
struct Index;
}

namespace twotower {

struct IndexOptions {
  // A FAISS index_factory string; the metric is always inner product.
  std::string factory = "Flat";
  int ef_search = 0;  // HNSW; 0 = FAISS default
  int nprobe = 0;     // IVF; 0 = FAISS default
};

class ItemIndex {
 public:
  struct Hit {
    int32_t row;  // position in ids()
    float score;  // inner product
  };

  // Builds an index over `vectors` (ids.size() x dim, row-major).
  static absl::StatusOr<std::unique_ptr<ItemIndex>> Build(std::vector<std::string> ids,
                                                          const std::vector<float>& vectors,
                                                          int dim, const IndexOptions& options);
  ~ItemIndex();
  ItemIndex(const ItemIndex&) = delete;
  ItemIndex& operator=(const ItemIndex&) = delete;

  // Top `k` rows by descending inner product for each of `n` queries, skipping rows in
  // `excluded[q]` (may be null). Over-fetches by the number of excluded rows, so an exact
  // index returns exactly min(k, eligible rows) hits. Thread-safe.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(
      const float* queries, int n, int k,
      const std::vector<absl::flat_hash_set<int32_t>>* excluded) const;

  const std::vector<std::string>& ids() const { return ids_; }
  int size() const { return static_cast<int>(ids_.size()); }
  int dim() const { return dim_; }
  const IndexOptions& options() const { return options_; }

 private:
  ItemIndex() = default;
  std::vector<std::string> ids_;
  int dim_ = 0;
  IndexOptions options_;
  std::unique_ptr<faiss::Index> index_;
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_ITEM_INDEX_H_
