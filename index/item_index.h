// The item index: FAISS inner-product search over the item vectors, with FAISS row ids
// mapped back to item ids. FAISS reports errors by throwing; they are caught here and
// become Status values, so no exception leaves this module.
#ifndef TWOTOWER_INDEX_ITEM_INDEX_H_
#define TWOTOWER_INDEX_ITEM_INDEX_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "index/exact_scan.h"
#include "index/huge_page_array.h"

namespace faiss {
struct Index;
}

namespace twotower {

struct IndexOptions {
  // A FAISS index_factory string; the metric is always inner product. "Flat" (exact) is
  // served by our own scan (index/exact_scan.h), any other string by FAISS.
  std::string factory = "Flat";
  int ef_search = 0;  // HNSW; 0 = FAISS default
  int nprobe = 0;     // IVF; 0 = FAISS default
  // "Flat": keep an fp16 copy for the scan's first pass (HalfRows, index/half_rows.h; the
  // same answers, half the memory traffic, 2 bytes more per value). Where the copy cannot
  // be made (no F16C, dim not a multiple of 8, a value beyond fp16's range) the scan reads
  // the floats only, and ItemIndex::options() says false.
  bool half_first_pass = true;
};

// Which rows one query may return: not in `excluded` (e.g. the caller's "already seen")
// nor in `removed` (e.g. items deleted online), and (when `allowed` is set) only rows whose
// byte in `allowed` is non-zero. Pointers may be null; they must outlive the search.
struct RowFilter {
  const absl::flat_hash_set<int32_t>* excluded = nullptr;
  const absl::flat_hash_set<int32_t>* removed = nullptr;
  const std::vector<uint8_t>* allowed = nullptr;

  bool empty() const {
    return (excluded == nullptr || excluded->empty()) && (removed == nullptr || removed->empty()) &&
           allowed == nullptr;
  }
  bool Allows(int32_t row) const {
    return (allowed == nullptr || (*allowed)[row] != 0) &&
           (excluded == nullptr || !excluded->contains(row)) &&
           (removed == nullptr || !removed->contains(row));
  }
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

  // Top `k` rows by descending inner product for each of `n` queries; `filters` is empty
  // or has one RowFilter per query. Queries without a filter are searched as one batch.
  // Filtered queries: exact (Flat) and IVF indexes apply the filter inside the FAISS
  // search (an IDSelector), so an exact index returns exactly min(k, eligible rows) hits;
  // other indexes (HNSW) over-fetch and post-filter, widening the search until k eligible
  // rows are found or the whole index has been asked for. Thread-safe.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(const float* queries, int n, int k,
                                                       std::span<const RowFilter> filters) const;
  // Convenience: `excluded` (null, or one set per query) as the only filter.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(
      const float* queries, int n, int k,
      const std::vector<absl::flat_hash_set<int32_t>>* excluded) const;

  // Changes the search-time parameters (HNSW efSearch, IVF nprobe; 0 = leave) without a
  // rebuild. Not thread-safe: only while nothing searches (e.g. a benchmark's sweep).
  void SetSearchParams(int ef_search, int nprobe);

  const std::vector<std::string>& ids() const { return ids_; }
  int size() const { return static_cast<int>(ids_.size()); }
  int dim() const { return dim_; }
  const IndexOptions& options() const { return options_; }

 private:
  ItemIndex() = default;
  // One FAISS search of `n` queries for `fetch` results each, optionally restricted.
  absl::Status RawSearch(const float* queries, int n, int fetch, const RowFilter* filter,
                         std::vector<float>* scores, std::vector<int64_t>* labels) const;
  std::vector<std::string> ids_;
  bool supports_selector_ = false;  // Flat and IVF take an IDSelector in 1.7.3; HNSW not
  HugePageFloats exact_vectors_;  // "Flat": the matrix our exact scan reads (no FAISS)
  std::optional<HalfRows> exact_halves_;  // "Flat": its fp16 copy for the first pass
  int dim_ = 0;
  IndexOptions options_;
  std::unique_ptr<faiss::Index> index_;
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_ITEM_INDEX_H_
