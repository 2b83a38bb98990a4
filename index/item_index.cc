#include "index/item_index.h"

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/invlists/InvertedLists.h>
#include <malloc.h>

#include <algorithm>
#include <exception>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "index/exact_scan.h"
#include "index/faiss_file.h"
#include "util/status_macros.h"

namespace twotower {

const char kSupportedIndexFactories[] =
    "Flat; HNSW<M> or HNSW<M>,Flat (M 2..256); IVF<nlist>,Flat, IVF<nlist>,SQ8, IVF<nlist>,SQfp16 "
    "or IVF<nlist>,PQ<m>[x<nbits>] (nlist 1..1048576, at most the item count); SQ8; SQfp16; "
    "PQ<m>[x<nbits>] (m 1..4096 dividing the dimension, nbits 1..8, default 8; at least 2^nbits "
    "items)";

namespace {

// A factory string taken apart: [coarse,]codes.
struct FactorySpec {
  enum class Coarse { kNone, kHnsw, kIvf };
  enum class Codes { kFlat, kSq8, kSqFp16, kPq };
  Coarse coarse = Coarse::kNone;
  int coarse_number = 0;  // HNSW M or IVF nlist
  Codes codes = Codes::kFlat;
  int pq_m = 0;
  int pq_bits = 8;

  // The string FAISS is given: built from the parsed numbers, so it sees nothing else.
  std::string Canonical() const {
    std::string codes_part;
    switch (codes) {
      case Codes::kFlat: codes_part = "Flat"; break;
      case Codes::kSq8: codes_part = "SQ8"; break;
      case Codes::kSqFp16: codes_part = "SQfp16"; break;
      case Codes::kPq: codes_part = absl::StrCat("PQ", pq_m, "x", pq_bits); break;
    }
    switch (coarse) {
      case Coarse::kNone: return codes_part;
      case Coarse::kHnsw: return absl::StrCat("HNSW", coarse_number);  // IndexHNSWFlat
      case Coarse::kIvf: return absl::StrCat("IVF", coarse_number, ",", codes_part);
    }
    return codes_part;
  }
  // Training points FAISS needs (its k-means asserts nx >= k; SQ8 reads a min and a max).
  int64_t MinItems() const {
    int64_t need = 0;
    if (coarse == Coarse::kIvf) need = coarse_number;
    if (codes == Codes::kPq) need = std::max<int64_t>(need, int64_t{1} << pq_bits);
    if (codes == Codes::kSq8) need = std::max<int64_t>(need, 1);
    return need;
  }
};

// A user's string, quoted for a message: escaped, and cut (the whole may be long).
std::string Quote(absl::string_view s) {
  constexpr size_t kShown = 64;
  std::string out = absl::StrCat("\"", absl::CHexEscape(s.substr(0, kShown)), "\"");
  if (s.size() > kShown) absl::StrAppend(&out, "... (", s.size(), " characters)");
  return out;
}

absl::Status Invalid(absl::string_view factory, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("index ", Quote(factory), ": ", what));
}

// Plain decimal: digits only, no sign, no leading zero, at most 9 digits (fits an int).
// `name` and [lo, hi] for the message.
absl::Status ParseNumber(absl::string_view factory, absl::string_view digits, absl::string_view name,
                         int lo, int hi, int* out) {
  const bool digits_only = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (!digits_only || digits.size() > 9 || (digits.size() > 1 && digits[0] == '0')) {
    return Invalid(factory, absl::StrCat(name, " ", Quote(digits), " is not a plain decimal number (",
                                         name, " in ", lo, "..", hi, ")"));
  }
  int64_t value = 0;
  for (char c : digits) value = value * 10 + (c - '0');
  if (value < lo || value > hi) {
    return Invalid(factory, absl::StrCat(name, " ", value, " is out of range ", lo, "..", hi));
  }
  *out = static_cast<int>(value);
  return absl::OkStatus();
}

bool Consume(absl::string_view* s, absl::string_view prefix) {
  if (s->substr(0, prefix.size()) != prefix) return false;
  s->remove_prefix(prefix.size());
  return true;
}

absl::Status NotSupported(absl::string_view factory) {
  return Invalid(factory, absl::StrCat("not a supported index; supported: ", kSupportedIndexFactories));
}

// The codes part: Flat, SQ8, SQfp16, PQ<m>[x<nbits>].
absl::Status ParseCodes(absl::string_view factory, absl::string_view part, FactorySpec* spec) {
  if (part == "Flat") {
    spec->codes = FactorySpec::Codes::kFlat;
  } else if (part == "SQ8") {
    spec->codes = FactorySpec::Codes::kSq8;
  } else if (part == "SQfp16") {
    spec->codes = FactorySpec::Codes::kSqFp16;
  } else if (Consume(&part, "PQ")) {
    spec->codes = FactorySpec::Codes::kPq;
    const size_t x = part.find('x');
    if (absl::Status s = ParseNumber(factory, part.substr(0, x), "PQ m", 1, kMaxPqM, &spec->pq_m); !s.ok()) {
      return s;
    }
    if (x != absl::string_view::npos) {
      if (absl::Status s = ParseNumber(factory, part.substr(x + 1), "PQ nbits", 1, kMaxPqBits, &spec->pq_bits);
          !s.ok()) {
        return s;
      }
    }
  } else {
    return NotSupported(factory);
  }
  return absl::OkStatus();
}

absl::StatusOr<FactorySpec> ParseFactory(absl::string_view factory) {
  if (factory.size() > static_cast<size_t>(kMaxFactoryLength)) {
    return Invalid(factory, absl::StrCat("longer than ", kMaxFactoryLength, " characters"));
  }
  FactorySpec spec;
  const std::vector<absl::string_view> parts = absl::StrSplit(factory, ',');
  if (parts.size() > 2) return NotSupported(factory);
  const bool has_codes = parts.size() == 2;  // <coarse>,<codes>; else <coarse> or <codes> alone
  absl::string_view coarse = parts[0];
  if (Consume(&coarse, "HNSW")) {
    spec.coarse = FactorySpec::Coarse::kHnsw;
    RETURN_IF_ERROR(ParseNumber(factory, coarse, "HNSW M", kMinHnswM, kMaxHnswM, &spec.coarse_number));
    if (has_codes && parts[1] != "Flat") {
      return Invalid(factory, "HNSW is supported over Flat storage only (HNSW<M> or HNSW<M>,Flat)");
    }
    return spec;
  }
  if (Consume(&coarse, "IVF")) {
    if (!has_codes) {
      return Invalid(factory, "an IVF index needs its codes: IVF<nlist>,Flat, ,SQ8, ,SQfp16 or ,PQ<m>[x<nbits>]");
    }
    spec.coarse = FactorySpec::Coarse::kIvf;
    RETURN_IF_ERROR(ParseNumber(factory, coarse, "IVF nlist", 1, kMaxNlist, &spec.coarse_number));
    RETURN_IF_ERROR(ParseCodes(factory, parts[1], &spec));
    return spec;
  }
  if (has_codes) return NotSupported(factory);
  RETURN_IF_ERROR(ParseCodes(factory, parts[0], &spec));
  return spec;
}

absl::Status CheckSearchParams(const IndexOptions& options, const FactorySpec& spec) {
  if (options.ef_search < 0 || options.ef_search > kMaxEfSearch) {
    return Invalid(options.factory, absl::StrCat("ef_search ", options.ef_search, " is out of range 0..",
                                                 kMaxEfSearch, " (0 = FAISS default)"));
  }
  const int max_nprobe = spec.coarse == FactorySpec::Coarse::kIvf ? spec.coarse_number : kMaxNlist;
  if (options.nprobe < 0 || options.nprobe > max_nprobe) {
    return Invalid(options.factory,
                   absl::StrCat("nprobe ", options.nprobe, " is out of range 0..", max_nprobe,
                                spec.coarse == FactorySpec::Coarse::kIvf ? " (at most nlist; " : " (",
                                "0 = FAISS default)"));
  }
  return absl::OkStatus();
}

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

// min(cap, rows `filter` allows among 0..total-1); null = all.
int CountEligible(const RowFilter* filter, int total, int cap) {
  if (filter == nullptr) return std::min(total, cap);
  if (filter->allowed == nullptr) {
    // Only exclusions: the rows not named are eligible (the sets may overlap: a lower bound).
    const int64_t named = (filter->excluded != nullptr ? static_cast<int64_t>(filter->excluded->size()) : 0) +
                          (filter->removed != nullptr ? static_cast<int64_t>(filter->removed->size()) : 0);
    if (total - named >= cap) return cap;
  }
  int count = 0;
  for (int row = 0; row < total && count < cap; ++row) count += filter->Allows(row);
  return count;
}

// x * 4^level, saturating at `cap`.
int64_t Widened(int64_t x, int level, int64_t cap) {
  for (int i = 0; i < level && x < cap; ++i) x *= 4;
  return std::min(x, cap);
}

// An HNSW search whose efSearch would exceed total / kHnswEfPerScan (and the operator's
// own efSearch) gives way to the exact scan: a graph search scores about efSearch x 2M
// rows in random order, the scan every row in order, bandwidth-bound. Measured with
// bench/index_bench.cc at 200k x 64-d: HNSW32 at efSearch 256 took about as long as an
// exact scan (p50 0.7 vs 0.8 ms).
constexpr int kHnswEfPerScan = 512;

}  // namespace

absl::Status ValidateIndexOptions(const IndexOptions& options) {
  ASSIGN_OR_RETURN(FactorySpec spec, ParseFactory(options.factory));
  return CheckSearchParams(options, spec);
}

absl::StatusOr<std::string> CanonicalIndexFactory(const std::string& factory) {
  ASSIGN_OR_RETURN(FactorySpec spec, ParseFactory(factory));
  return spec.Canonical();
}

absl::Status CheckIndexFits(const std::string& factory, int64_t items, int dim) {
  ASSIGN_OR_RETURN(FactorySpec spec, ParseFactory(factory));
  if (items < spec.MinItems()) {
    return Invalid(factory,
                   absl::StrCat("needs at least ", spec.MinItems(), " items to train, the catalogue has ", items));
  }
  if (spec.codes == FactorySpec::Codes::kPq && dim % spec.pq_m != 0) {
    return Invalid(factory, absl::StrCat("PQ m ", spec.pq_m, " does not divide the dimension ", dim));
  }
  return absl::OkStatus();
}

ItemIndex::~ItemIndex() {
  // An IVF index holds its lists in blocks below glibc's mmap threshold: freed, they would
  // stay in the heap (a rebuild left ~70 bytes per item of an IVF,SQ8 index resident).
  // A large index gives their pages back once it is gone.
  const bool large = index_ != nullptr && MemoryBytes() >= (size_t{64} << 20);
  index_.reset();
  if (large) malloc_trim(0);
}

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::Build(const std::vector<std::string>& ids,
                                                            const std::vector<float>& vectors,
                                                            int dim, const IndexOptions& options) {
  if (dim >= 1 && vectors.size() != ids.size() * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError("index: vectors do not match ids x dim");
  }
  return Build(std::span<const float>(vectors), dim, options);
}

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::Build(std::span<const float> vectors, int dim,
                                                            const IndexOptions& options) {
  return BuildFrom(vectors, dim, options, nullptr);
}

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::Build(std::vector<float>&& vectors, int dim,
                                                            const IndexOptions& options) {
  std::vector<float> owned = std::move(vectors);
  return BuildFrom(owned, dim, options, &owned);
}

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::BuildFrom(std::span<const float> vectors, int dim,
                                                                const IndexOptions& options,
                                                                std::vector<float>* release) {
  RETURN_IF_ERROR(ValidateIndexOptions(options));
  ASSIGN_OR_RETURN(const FactorySpec spec, ParseFactory(options.factory));
  if (dim < 1) return absl::InvalidArgumentError("index: dim must be >= 1");
  if (vectors.size() % static_cast<size_t>(dim) != 0) {
    return absl::InvalidArgumentError("index: vectors are not rows of dim values");
  }
  if (vectors.size() / dim > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("index: more than 2^31 - 1 items");
  }
  const int64_t n = static_cast<int64_t>(vectors.size() / dim);
  RETURN_IF_ERROR(CheckIndexFits(options.factory, n, dim));
  std::unique_ptr<ItemIndex> index(new ItemIndex());  // private constructor
  index->size_ = static_cast<int>(n);
  index->dim_ = dim;
  index->options_ = options;
  if (spec.coarse == FactorySpec::Coarse::kNone && spec.codes == FactorySpec::Codes::kFlat) {
    index->kind_ = Kind::kExact;
    index->exact_vectors_ = HugePageFloats(vectors);
    // The floats are copied: the caller's go before the fp16 copy is made (load peak).
    if (release != nullptr) std::vector<float>().swap(*release);
    const std::span<const float> floats(index->exact_vectors_.data(), index->exact_vectors_.size());
    if (options.half_first_pass) index->exact_halves_ = HalfRows::Of(floats, dim);
    // options() reports what the index has: no copy where it could not be made.
    index->options_.half_first_pass = index->exact_halves_.has_value();
    return index;
  }
  index->options_.half_first_pass = false;  // FAISS indexes: no fp16 pass
  const std::string canonical = spec.Canonical();
  try {
    index->index_.reset(faiss::index_factory(dim, canonical.c_str(), faiss::METRIC_INNER_PRODUCT));
    // The factory turns on polysemous training for 8-bit PQ codes: a simulated annealing
    // that reorders the centroids for Hamming-distance filtering, which our searches do
    // not use (FAISS 1.7.3: ~8 s per sub-quantizer whatever the data size). Off.
    if (auto* pq = dynamic_cast<faiss::IndexPQ*>(index->index_.get())) pq->do_polysemous_training = false;
    if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(index->index_.get())) ivfpq->do_polysemous_training = false;
    if (!index->index_->is_trained) index->index_->train(n, vectors.data());
    index->index_->add(n, vectors.data());
    if (release != nullptr) std::vector<float>().swap(*release);
    // IVF lists grow as vectors do (up to twice what they hold): an IVF,SQ8 index of 64-d
    // items held ~105 bytes per item for its 72 (64 of codes, FAISS's 8-byte id).
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index->index_.get())) {
      if (auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists)) {
        for (size_t l = 0; l < lists->nlist; ++l) {
          lists->codes[l].shrink_to_fit();
          lists->ids[l].shrink_to_fit();
        }
      }
    }
  } catch (const std::exception& e) {
    return Invalid(options.factory, e.what());
  }
  RETURN_IF_ERROR(index->AdoptFaissIndex());
  RETURN_IF_ERROR(index->SetSearchParams(options.ef_search, options.nprobe));
  return index;
}

std::optional<std::span<const float>> ItemIndex::Floats(std::vector<float>* scratch) const {
  const size_t values = static_cast<size_t>(size_) * dim_;
  switch (kind_) {
    case Kind::kExact:
      return std::span<const float>(exact_vectors_.data(), values);
    case Kind::kHnsw:
      return std::span<const float>(hnsw_rows_, values);
    case Kind::kIvf:
      // IVF,Flat's lists hold the floats themselves; IVF with SQ / PQ codes does not.
      if (dynamic_cast<const faiss::IndexIVFFlat*>(index_.get()) == nullptr) return std::nullopt;
      try {
        scratch->resize(values);
        if (size_ > 0) index_->reconstruct_n(0, size_, scratch->data());
      } catch (const std::exception&) {
        scratch->clear();
        return std::nullopt;
      }
      return std::span<const float>(*scratch);
    case Kind::kCodes:
      return std::nullopt;
  }
  return std::nullopt;
}

namespace {

// Bytes a FAISS index of the kinds we build holds (see ItemIndex::MemoryBytes).
size_t FaissBytes(const faiss::Index* index) {
  if (index == nullptr) return 0;
  size_t bytes = 0;
  if (const auto* flat = dynamic_cast<const faiss::IndexFlatCodes*>(index)) bytes += flat->codes.capacity();
  if (const auto* pq = dynamic_cast<const faiss::IndexPQ*>(index)) bytes += pq->pq.centroids.capacity() * sizeof(float);
  if (const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(index)) bytes += sq->sq.trained.capacity() * sizeof(float);
  if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index)) {
    bytes += FaissBytes(hnsw->storage) + hnsw->hnsw.neighbors.capacity() * sizeof(faiss::HNSW::storage_idx_t) +
             hnsw->hnsw.levels.capacity() * sizeof(int) + hnsw->hnsw.offsets.capacity() * sizeof(size_t);
  }
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index)) {
    bytes += FaissBytes(ivf->quantizer);
    if (const auto* lists = dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists)) {
      for (size_t l = 0; l < lists->nlist; ++l) {
        bytes += lists->codes[l].capacity() + lists->ids[l].capacity() * sizeof(faiss::Index::idx_t);
      }
    }
    if (const auto* ivfpq = dynamic_cast<const faiss::IndexIVFPQ*>(index)) {
      bytes += ivfpq->pq.centroids.capacity() * sizeof(float) + ivfpq->precomputed_table.size() * sizeof(float);
    }
    if (const auto* ivfsq = dynamic_cast<const faiss::IndexIVFScalarQuantizer*>(index)) {
      bytes += ivfsq->sq.trained.capacity() * sizeof(float);
    }
  }
  return bytes;
}

}  // namespace

size_t ItemIndex::MemoryBytes() const {
  if (kind_ != Kind::kExact) return FaissBytes(index_.get());
  size_t bytes = exact_vectors_.size() * sizeof(float);
  if (exact_halves_.has_value()) {
    bytes += static_cast<size_t>(exact_halves_->rows()) * exact_halves_->dim() * sizeof(uint16_t) +
             static_cast<size_t>((exact_halves_->rows() + HalfRows::kGroupRows - 1) / HalfRows::kGroupRows) * sizeof(float);
  }
  return bytes;
}

absl::Status ItemIndex::AdoptFaissIndex() {
  if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index_.get()); hnsw != nullptr) {
    const auto* storage = dynamic_cast<const faiss::IndexFlat*>(hnsw->storage);
    if (storage == nullptr) return absl::InternalError(absl::StrCat("index ", options_.factory, ": no flat storage"));
    kind_ = Kind::kHnsw;
    supports_selector_ = true;
    hnsw_rows_ = storage->get_xb();  // after add: the storage does not move again
  } else if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get()); ivf != nullptr) {
    kind_ = Kind::kIvf;
    nlist_ = static_cast<int>(ivf->nlist);
    supports_selector_ = true;
  } else {
    kind_ = Kind::kCodes;
    // IndexScalarQuantizer takes an IDSelector in 1.7.3; IndexPQ refuses any params.
    supports_selector_ = dynamic_cast<const faiss::IndexPQ*>(index_.get()) == nullptr;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ItemIndex>> ItemIndex::Load(std::span<const float> vectors, int dim,
                                                           const IndexOptions& options, int fd,
                                                           const std::string& path) {
  RETURN_IF_ERROR(ValidateIndexOptions(options));
  ASSIGN_OR_RETURN(const FactorySpec spec, ParseFactory(options.factory));
  if (spec.coarse == FactorySpec::Coarse::kNone && spec.codes == FactorySpec::Codes::kFlat) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": index \"Flat\" is not read from a file (the exact scan reads the item vectors)"));
  }
  if (dim < 1) return absl::InvalidArgumentError("index: dim must be >= 1");
  if (vectors.size() % static_cast<size_t>(dim) != 0) {
    return absl::InvalidArgumentError("index: vectors are not rows of dim values");
  }
  const size_t n = vectors.size() / dim;
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("index: more than 2^31 - 1 items");
  }
  FaissFileExpectation expected;
  expected.canonical_factory = spec.Canonical();
  expected.ntotal = static_cast<int64_t>(n);
  expected.dim = dim;
  expected.vectors = vectors.data();
  ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> read, ReadFaissIndexFile(fd, path, expected));
  std::unique_ptr<ItemIndex> index(new ItemIndex());  // private constructor
  index->size_ = static_cast<int>(n);
  index->dim_ = dim;
  index->options_ = options;
  index->options_.half_first_pass = false;  // FAISS indexes: no fp16 pass
  index->index_ = std::move(read);
  RETURN_IF_ERROR(index->AdoptFaissIndex());
  RETURN_IF_ERROR(index->SetSearchParams(options.ef_search, options.nprobe));
  return index;
}

absl::Status ItemIndex::Save(const std::string& path) const {
  if (index_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": index \"Flat\" has nothing to persist (the exact scan reads the item vectors)"));
  }
  return WriteFaissIndexFile(*index_, path);
}

absl::Status ItemIndex::SetSearchParams(int ef_search, int nprobe) {
  if (ef_search < 0 || nprobe < 0) {
    return absl::InvalidArgumentError("ef_search and nprobe must be >= 0 (0 = leave)");
  }
  IndexOptions next = options_;
  if (ef_search > 0) next.ef_search = ef_search;
  if (nprobe > 0) next.nprobe = nprobe;
  RETURN_IF_ERROR(ValidateIndexOptions(next));
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index_.get()); hnsw != nullptr && ef_search > 0) {
    hnsw->hnsw.efSearch = ef_search;
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get()); ivf != nullptr && nprobe > 0) {
    ivf->nprobe = nprobe;
  }
  options_ = next;
  return absl::OkStatus();
}

ItemIndex::Counters ItemIndex::counters() const {
  return {searched_.load(std::memory_order_relaxed), widened_.load(std::memory_order_relaxed),
          exact_.load(std::memory_order_relaxed)};
}

absl::Status ItemIndex::RawSearch(const float* queries, int n, int fetch, int depth, const RowFilter* filter,
                                  std::vector<float>* scores, std::vector<int64_t>* labels) const {
  scores->resize(static_cast<size_t>(n) * fetch);
  labels->resize(static_cast<size_t>(n) * fetch);
  static_assert(sizeof(int64_t) == sizeof(faiss::Index::idx_t));
  auto* out = reinterpret_cast<faiss::Index::idx_t*>(labels->data());
  try {
    std::optional<RowSelector> selector;
    if (filter != nullptr && supports_selector_) selector.emplace(*filter);
    faiss::IDSelector* sel = selector.has_value() ? &*selector : nullptr;
    switch (kind_) {
      case Kind::kIvf: {
        faiss::SearchParametersIVF params;
        params.sel = sel;
        params.nprobe = static_cast<size_t>(depth);
        index_->search(n, queries, fetch, scores->data(), out, &params);
        break;
      }
      case Kind::kHnsw: {
        faiss::SearchParametersHNSW params;
        params.sel = sel;
        params.efSearch = depth;
        params.check_relative_distance = static_cast<const faiss::IndexHNSW*>(index_.get())->hnsw.check_relative_distance;
        index_->search(n, queries, fetch, scores->data(), out, &params);
        break;
      }
      case Kind::kCodes:
      case Kind::kExact:
        if (sel != nullptr) {
          faiss::SearchParameters params;
          params.sel = sel;
          index_->search(n, queries, fetch, scores->data(), out, &params);
        } else {
          index_->search(n, queries, fetch, scores->data(), out);
        }
        break;
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("index search: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> ItemIndex::Search(
    const float* queries, int n, int k, std::span<const RowFilter> filters) const {
  if (k < 1) return absl::InvalidArgumentError("k must be >= 1");
  if (n < 0) return absl::InvalidArgumentError("index search: n must be >= 0");
  if (!filters.empty() && filters.size() != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError("index search: one filter per query");
  }
  const int total = size();
  std::vector<std::vector<Hit>> results(n);
  if (total == 0 || n == 0) return results;
  k = std::min(k, total);  // no query has more; a huge k must not size any buffer
  if (index_ != nullptr) return ApproximateSearch(queries, n, k, filters);
  // "Flat": our exact scan, filters applied inside it
  std::vector<std::vector<ScanHit>> hits =
      ExactTopK(exact_vectors_.data(), total, dim_, queries, n, k, filters, ScanKernel::kAuto,
                exact_halves_.has_value() ? &*exact_halves_ : nullptr);
  for (int q = 0; q < n; ++q) {
    results[q].reserve(hits[q].size());
    for (const ScanHit& hit : hits[q]) results[q].push_back({hit.row, hit.score});
  }
  return results;
}

// Searches every query at the index's own depth, then again wider those left short of
// min(k, eligible rows), level by level (see Search in the header). 1 <= k <= size().
absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> ItemIndex::ApproximateSearch(
    const float* queries, int n, int k, std::span<const RowFilter> filters) const {
  const int total = size();
  std::vector<std::vector<Hit>> results(n);
  searched_.fetch_add(n, std::memory_order_relaxed);
  const auto filter_of = [&](int q) -> const RowFilter* {
    return filters.empty() || filters[q].empty() ? nullptr : &filters[q];
  };
  // Depths at level 0: the index's own (FAISS defaults: efSearch 16, nprobe 1).
  int ef0 = 0, nprobe0 = 0;
  if (kind_ == Kind::kHnsw) ef0 = static_cast<const faiss::IndexHNSW*>(index_.get())->hnsw.efSearch;
  if (kind_ == Kind::kIvf) nprobe0 = static_cast<int>(static_cast<const faiss::IndexIVF*>(index_.get())->nprobe);
  nprobe0 = std::clamp(nprobe0, 1, nlist_ > 0 ? nlist_ : 1);
  // HNSW searches at least k deep (FAISS stops after efSearch steps: fewer than k hits
  // otherwise); beyond `hnsw_budget` the exact scan is cheaper. A query it leaves short
  // (a selective filter, rows the graph does not reach) goes to the exact scan: a wider
  // graph search costs several times more per level and may still fall short.
  const int64_t hnsw_budget = std::max<int64_t>(ef0, total / kHnswEfPerScan);

  std::vector<int> todo(n);
  for (int q = 0; q < n; ++q) todo[q] = q;
  std::vector<int> eligible(n, -1);  // min(k, eligible rows), counted when needed
  std::vector<float> scores;
  std::vector<int64_t> labels;
  // Query q's hits from row `at` of the last RawSearch (`fetch` per query).
  const auto collect = [&](int q, int at, int fetch) {
    const RowFilter* filter = filter_of(q);
    std::vector<Hit>& hits = results[q];
    hits.clear();
    for (int j = 0; j < fetch && static_cast<int>(hits.size()) < k; ++j) {
      const size_t i = static_cast<size_t>(at) * fetch + j;
      if (labels[i] < 0 || labels[i] >= total) continue;  // fewer results than asked
      const int32_t row = static_cast<int32_t>(labels[i]);
      if (filter != nullptr && !filter->Allows(row)) continue;
      hits.push_back({row, scores[i]});
    }
  };
  for (int level = 0; !todo.empty(); ++level) {
    // This level's depth; `exhaustive`: it visits every row, so what it returns is complete.
    int depth = 0;
    bool exhaustive = false, exact = false;
    if (kind_ == Kind::kIvf) {
      depth = static_cast<int>(Widened(nprobe0, level, nlist_));
      exhaustive = depth >= nlist_;
    } else if (kind_ == Kind::kHnsw) {
      const int ef = std::max(ef0, k);
      exact = level > 0 || ef > hnsw_budget;
      depth = std::min(ef, total);
    } else {
      exhaustive = true;  // flat codes: every code is scored (PQ with a filter: see below)
    }
    if (exact) {
      // The exact scan over the graph's flat storage, the filters applied inside.
      std::vector<float> batch;
      std::vector<RowFilter> batch_filters;
      for (int q : todo) {
        batch.insert(batch.end(), queries + static_cast<size_t>(q) * dim_, queries + static_cast<size_t>(q + 1) * dim_);
        batch_filters.push_back(filter_of(q) != nullptr ? *filter_of(q) : RowFilter{});
      }
      const std::vector<std::vector<ScanHit>> hits =
          ExactTopK(hnsw_rows_, total, dim_, batch.data(), static_cast<int>(todo.size()), k, batch_filters);
      for (size_t i = 0; i < todo.size(); ++i) {
        std::vector<Hit>& out = results[todo[i]];
        out.clear();
        for (const ScanHit& hit : hits[i]) out.push_back({hit.row, hit.score});
      }
      exact_.fetch_add(static_cast<int64_t>(todo.size()), std::memory_order_relaxed);
      break;
    }
    std::vector<int> short_queries;
    const auto check = [&](int q, bool complete) {
      if (complete || static_cast<int>(results[q].size()) >= k) return;
      if (eligible[q] < 0) eligible[q] = CountEligible(filter_of(q), total, k);
      if (static_cast<int>(results[q].size()) < eligible[q]) short_queries.push_back(q);
    };
    // Unfiltered queries: one batched search.
    std::vector<int> plain;
    std::vector<float> plain_queries;
    for (int q : todo) {
      if (filter_of(q) != nullptr) continue;
      plain.push_back(q);
      plain_queries.insert(plain_queries.end(), queries + static_cast<size_t>(q) * dim_,
                           queries + static_cast<size_t>(q + 1) * dim_);
    }
    if (!plain.empty()) {
      if (absl::Status s = RawSearch(plain_queries.data(), static_cast<int>(plain.size()), k, depth, nullptr,
                                     &scores, &labels);
          !s.ok()) {
        return s;
      }
      for (size_t i = 0; i < plain.size(); ++i) {
        collect(plain[i], static_cast<int>(i), k);
        check(plain[i], exhaustive);
      }
    }
    // Filtered queries, one at a time (each has its own filter).
    for (int q : todo) {
      const RowFilter* filter = filter_of(q);
      if (filter == nullptr) continue;
      int fetch = k;
      bool complete = exhaustive;
      if (!supports_selector_) {
        // PQ: over-fetch and post-filter, 4x more rows per level up to all of them.
        const int64_t named = (filter->excluded != nullptr ? static_cast<int64_t>(filter->excluded->size()) : 0) +
                              (filter->removed != nullptr ? static_cast<int64_t>(filter->removed->size()) : 0);
        fetch = static_cast<int>(Widened(std::max<int64_t>(2 * static_cast<int64_t>(k), k + named), level, total));
        complete = complete && fetch >= total;
      }
      const float* query = queries + static_cast<size_t>(q) * dim_;
      RETURN_IF_ERROR(RawSearch(query, 1, fetch, depth, filter, &scores, &labels));
      collect(q, 0, fetch);
      check(q, complete);
    }
    if (level == 0) widened_.fetch_add(static_cast<int64_t>(short_queries.size()), std::memory_order_relaxed);
    std::sort(short_queries.begin(), short_queries.end());
    todo = std::move(short_queries);
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
