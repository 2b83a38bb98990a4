// The item index: FAISS inner-product search over the item vectors, with FAISS row ids
// mapped back to item ids. FAISS reports errors by throwing; they are caught here and
// become Status values, so no exception leaves this module. Not every FAISS error is an
// exception (IVF0 trips an assert, PQ0 divides by zero, HNSW0 and overlong strings
// segfault, a huge efSearch allocates inside an OpenMP region): factory strings and search
// parameters are therefore checked against a grammar with bounds before FAISS sees them.
#ifndef TWOTOWER_INDEX_ITEM_INDEX_H_
#define TWOTOWER_INDEX_ITEM_INDEX_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "index/exact_scan.h"
#include "index/huge_page_array.h"

namespace faiss {
struct Index;
}

namespace twotower {

struct IndexOptions {
  // A FAISS index_factory string, one of the forms ValidateIndexOptions accepts (below);
  // the metric is always inner product. "Flat" (exact) is served by our own scan
  // (index/exact_scan.h), any other string by FAISS. Catalogue::Create also takes ""
  // (the bundle's persisted index, else "Flat": index/bundle_index.h); ItemIndex does not.
  std::string factory = "Flat";
  int ef_search = 0;  // HNSW search depth, 0..kMaxEfSearch; 0 = FAISS default (16)
  int nprobe = 0;     // IVF lists probed, 0..nlist; 0 = FAISS default (1)
  // "Flat": keep an fp16 copy for the scan's first pass (HalfRows, index/half_rows.h; the
  // same answers, half the memory traffic, 2 bytes more per value). Where the copy cannot
  // be made (no F16C, dim not a multiple of 8, a value beyond fp16's range) the scan reads
  // the floats only, and ItemIndex::options() says false.
  bool half_first_pass = true;
};

// The index factories we build (FAISS sees no other string), with the bounds on their
// numbers; ValidateIndexOptions lists them in its error.
//   Flat                     exact (our scan)
//   HNSW<M> | HNSW<M>,Flat   graph over the floats, M in 2..256
//   IVF<nlist>,Flat          inverted lists over the floats, nlist in 1..2^20
//   IVF<nlist>,SQ8 | IVF<nlist>,SQfp16 | IVF<nlist>,PQ<m>[x<nbits>]
//   SQ8 | SQfp16 | PQ<m>[x<nbits>]   scalar / product quantised codes, scanned whole;
//                            m in 1..4096 dividing the dimension, nbits in 1..8 (default 8)
// Numbers are plain decimal (no sign, no leading zero). What needs the data is checked by
// ItemIndex::Build: an IVF index needs at least nlist items to train, a PQ one at least
// 2^nbits, SQ8 at least one, and PQ's m must divide the dimension.
inline constexpr int kMaxFactoryLength = 256;
inline constexpr int kMinHnswM = 2;  // FAISS: M = 1 makes the level multiplier 1/ln 1
inline constexpr int kMaxHnswM = 256;
inline constexpr int kMaxNlist = 1 << 20;
inline constexpr int kMaxPqM = 4096;
inline constexpr int kMaxPqBits = 8;  // IndexIVFPQ in FAISS 1.7.3 refuses more
inline constexpr int kMaxEfSearch = 65536;
extern const char kSupportedIndexFactories[];  // the forms above, one line

// OK, or INVALID_ARGUMENT naming the bad part: a factory string not of the forms above
// (or longer than kMaxFactoryLength), a number out of its bounds, ef_search outside
// 0..kMaxEfSearch, nprobe outside 0..kMaxNlist or (IVF) above nlist. ef_search and nprobe
// are checked against their bounds for every factory (a value for another kind of index
// is kept and ignored). Needs no data: callable when flags are parsed. Build calls it first.
absl::Status ValidateIndexOptions(const IndexOptions& options);

// The form of a valid factory string FAISS is given (and that names the index in a
// bundle's record): "HNSW32,Flat" -> "HNSW32", "PQ8" -> "PQ8x8"; two strings name the same
// index if and only if their canonical forms are equal. INVALID_ARGUMENT as
// ValidateIndexOptions for a string it refuses.
absl::StatusOr<std::string> CanonicalIndexFactory(const std::string& factory);

// What ItemIndex::Build checks against the data, without the data: `items` items of `dim`
// are enough to train `factory` (IVF: nlist items; PQ: 2^nbits; SQ8: 1) and PQ's m
// divides `dim`. INVALID_ARGUMENT as Build would return it; OK for "Flat".
absl::Status CheckIndexFits(const std::string& factory, int64_t items, int dim);

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
    int32_t row;  // row of the vectors the index was built from
    float score;  // inner product
  };

  // Builds an index over `vectors` (n x dim, row-major; row r is item r of the caller's
  // list: the index keeps no ids). INVALID_ARGUMENT for options ValidateIndexOptions
  // refuses or that do not fit the data (see above). The index keeps what its kind needs
  // ("Flat": a copy of the floats, and their fp16 copy; FAISS: its own storage), never
  // `vectors` itself: the caller may free them once it returns.
  static absl::StatusOr<std::unique_ptr<ItemIndex>> Build(std::span<const float> vectors, int dim,
                                                          const IndexOptions& options);
  // The same, taking the floats: freed as soon as the index has its copy (for "Flat"
  // before the fp16 copy is made), which lowers the peak of a load by a third.
  static absl::StatusOr<std::unique_ptr<ItemIndex>> Build(std::vector<float>&& vectors, int dim,
                                                          const IndexOptions& options);
  // The same, for callers with an id list: `ids` only count the rows (vectors must be
  // ids.size() x dim); they are not kept.
  static absl::StatusOr<std::unique_ptr<ItemIndex>> Build(const std::vector<std::string>& ids,
                                                          const std::vector<float>& vectors,
                                                          int dim, const IndexOptions& options);
  // Reads an index persisted by Save instead of building one: the file open as `fd`
  // (named `path` in messages), e.g. a bundle's checksummed index.faiss. IVF inverted
  // lists are memory-mapped (FAISS's IO_FLAG_MMAP: file-backed pages, shared between
  // processes that map the same file, read in as searches touch them); every other part,
  // and HNSW and SQ/PQ codes, are read into memory. The file is untrusted input: it must
  // hold an index of `options.factory` (canonical forms) over exactly the rows of `vectors`
  // of `dim`, inner product, with a sound structure (graph links, list offsets and ids in
  // range, each row once) and, for a sample of rows, the vectors of `vectors` (exactly,
  // where it stores floats; as close as a fresh encoding, where it stores codes).
  // DATA_LOSS naming `path` otherwise, FAISS's exceptions included; INVALID_ARGUMENT for
  // options ValidateIndexOptions refuses or "Flat" (the exact scan has no file). The
  // search parameters of `options` (0 = the file's) apply as in Build.
  static absl::StatusOr<std::unique_ptr<ItemIndex>> Load(std::span<const float> vectors, int dim,
                                                         const IndexOptions& options, int fd,
                                                         const std::string& path);
  // Writes this index with faiss::write_index to `path` (a new file), fsynced, for Load.
  // FAILED_PRECONDITION for "Flat" (nothing to persist: the scan reads the vectors).
  absl::Status Save(const std::string& path) const;
  // The FAISS index (null for "Flat"), e.g. to read its build parameters.
  const faiss::Index* faiss_index() const { return index_.get(); }

  ~ItemIndex();
  ItemIndex(const ItemIndex&) = delete;
  ItemIndex& operator=(const ItemIndex&) = delete;

  // Top `k` rows by descending inner product for each of `n` queries; `filters` is empty
  // or has one RowFilter per query. Every index returns min(k, eligible rows) hits, no
  // row twice, all passing the filter; the approximate ones may miss some of the true
  // top k (recall), never return fewer. Queries without a filter are searched as one
  // batch; filters are applied inside the search (an IDSelector), except for PQ, which
  // over-fetches and post-filters. A query the approximate search leaves short is
  // searched again: IVF with 4x the lists probed, up to all of them (then it is
  // complete); PQ with 4x the rows fetched, up to all of them; HNSW (which searches with
  // efSearch >= k) by the exact scan over the graph's own float storage (no copy), also
  // from the start when k is beyond what a graph search is worth (efSearch above
  // size() / 512). SQ scans every code and is never short. counters() says how often
  // that happens. No index keeps a second copy of the floats for this: HNSW's storage and
  // IVF,Flat's lists are the floats; PQ and SQ codes are lossy by choice (to save the
  // memory), so their complete pass scans the codes, with scores as approximate as the
  // codes. Thread-safe.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(const float* queries, int n, int k,
                                                       std::span<const RowFilter> filters) const;
  // Convenience: `excluded` (null, or one set per query) as the only filter.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(
      const float* queries, int n, int k,
      const std::vector<absl::flat_hash_set<int32_t>>* excluded) const;

  // Changes the search-time parameters (HNSW efSearch, IVF nprobe; 0 = leave) without a
  // rebuild, with ValidateIndexOptions' bounds (INVALID_ARGUMENT: nothing changed). Not
  // thread-safe: only while nothing searches (e.g. a benchmark's sweep).
  absl::Status SetSearchParams(int ef_search, int nprobe);

  // Queries answered by an approximate index since Build; how many of them its first
  // search left short of min(k, eligible rows) (searched again); how many the exact scan
  // answered (HNSW: short, or k beyond the graph search's budget).
  struct Counters {
    int64_t queries = 0;
    int64_t widened = 0;
    int64_t exact = 0;
  };
  Counters counters() const;

  // The float rows the index was built from, exactly, where it keeps them: "Flat" (its
  // matrix) and HNSW (the graph's flat storage) as a view valid while the index lives;
  // IVF,Flat reconstructed from its inverted lists into *scratch. nullopt for the lossy
  // codes (SQ8, SQfp16, PQ, IVF with SQ or PQ codes), which keep no float: rebuilding
  // from them needs the vectors from elsewhere (Catalogue::WithIndex re-reads the bundle).
  std::optional<std::span<const float>> Floats(std::vector<float>* scratch) const;

  // Bytes the index holds (its arrays' capacities): "Flat" its floats and fp16 copy; a
  // FAISS index its storage or codes, graph or inverted lists (with FAISS's 8-byte id per
  // row) and trained tables. What memory per item an index choice costs.
  size_t MemoryBytes() const;

  int size() const { return size_; }
  int dim() const { return dim_; }
  const IndexOptions& options() const { return options_; }

 private:
  enum class Kind { kExact, kHnsw, kIvf, kCodes };
  ItemIndex() = default;
  // kind_, nlist_, supports_selector_ and hnsw_rows_ from index_ (built and filled, or read).
  absl::Status AdoptFaissIndex();
  // One FAISS search of `n` queries for `fetch` results each; `depth` is the IVF nprobe /
  // HNSW efSearch (ignored by other kinds); `filter` (or null) is passed as an IDSelector
  // where the index takes one.
  absl::Status RawSearch(const float* queries, int n, int fetch, int depth, const RowFilter* filter,
                         std::vector<float>* scores, std::vector<int64_t>* labels) const;
  // Build, freeing *release (the caller's floats, which `vectors` views; may be null)
  // once they are copied.
  static absl::StatusOr<std::unique_ptr<ItemIndex>> BuildFrom(std::span<const float> vectors, int dim,
                                                              const IndexOptions& options,
                                                              std::vector<float>* release);
  absl::StatusOr<std::vector<std::vector<Hit>>> ApproximateSearch(
      const float* queries, int n, int k, std::span<const RowFilter> filters) const;

  int size_ = 0;
  Kind kind_ = Kind::kExact;
  bool supports_selector_ = false;  // all but IndexPQ take an IDSelector in FAISS 1.7.3
  int nlist_ = 0;                   // IVF
  HugePageFloats exact_vectors_;  // "Flat": the matrix our exact scan reads (no FAISS)
  std::optional<HalfRows> exact_halves_;  // "Flat": its fp16 copy for the first pass
  const float* hnsw_rows_ = nullptr;  // HNSW: its IndexFlat storage, row-major, for the exact pass
  int dim_ = 0;
  IndexOptions options_;
  std::unique_ptr<faiss::Index> index_;
  mutable std::atomic<int64_t> searched_{0}, widened_{0}, exact_{0};
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_ITEM_INDEX_H_
