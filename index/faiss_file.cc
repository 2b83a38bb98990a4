#include "index/faiss_file.h"

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/ProductQuantizer.h>
#include <faiss/impl/ScalarQuantizer.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <typeinfo>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

// Rows whose stored vectors are compared with the bundle's, spread over the catalogue.
constexpr int kSampleRows = 64;
// HNSW search depth a file may carry (the server's own bound, index/item_index.h).
constexpr int kMaxFileEfSearch = 65536;

absl::Status Loss(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

// A fourcc as text, e.g. "IwFl", non-printable bytes escaped.
std::string FourccText(const unsigned char* p) {
  std::string out = "\"";
  for (int i = 0; i < 4; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
      out.push_back(static_cast<char>(p[i]));
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(p[i], absl::kZeroPad2));
    }
  }
  return out + "\"";
}

// What a FAISS fourcc is, for messages (the kinds our factories write, and their
// neighbours a wrong file may hold).
std::string FourccName(const unsigned char* p) {
  const std::string code(reinterpret_cast<const char*>(p), 4);
  static constexpr std::pair<const char*, const char*> kNames[] = {
      {"IHNf", "HNSW (flat storage)"}, {"IwFl", "IVF,Flat"},  {"IwSq", "IVF,SQ"},
      {"IwSQ", "IVF,SQ"},              {"IwPQ", "IVF,PQ"},    {"IxSQ", "SQ"},
      {"IxPq", "PQ"},                  {"IxFI", "Flat (inner product)"},
      {"IxF2", "Flat (L2)"},           {"IxFl", "Flat"},
  };
  for (const auto& [fourcc, name] : kNames) {
    if (code == fourcc) return absl::StrCat(FourccText(p), " (", name, ")");
  }
  return FourccText(p);
}

// faiss::FileIOReader (the IO_FLAG_MMAP hook wants one) that refuses a count the rest of
// the file cannot hold before FAISS allocates for it: FAISS reads a vector's length (one
// 8-byte value), resizes the vector, then reads it, so a corrupt length would allocate up
// to 2^40 elements. Every 8-byte value read alone in the formats we read is such a count
// or a scalar no larger than `floor` (item count, list count, ids; the header's 2^20
// placeholder), so: an 8-byte value larger than both `floor` and the bytes left is refused.
class GuardedReader : public faiss::FileIOReader {
 public:
  GuardedReader(FILE* file, uint64_t file_bytes, uint64_t floor)
      : faiss::FileIOReader(file), file_bytes_(file_bytes), floor_(floor) {}

  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    const size_t got = faiss::FileIOReader::operator()(ptr, size, nitems);
    if (size == sizeof(uint64_t) && nitems == 1 && got == 1) {
      uint64_t value = 0;
      std::memcpy(&value, ptr, sizeof value);
      const long at = std::ftell(f);
      const uint64_t left = at >= 0 && static_cast<uint64_t>(at) <= file_bytes_ ? file_bytes_ - at : 0;
      if (value > floor_ && value > left) {
        if (refused_.empty()) {
          refused_ = absl::StrCat("a count of ", value, " at byte ", at - 8, " is more than the ", left,
                                  " bytes left in the file (corrupt)");
        }
        return 0;  // FAISS throws "read error"
      }
    }
    return got;
  }
  const std::string& refused() const { return refused_; }

 private:
  const uint64_t file_bytes_;
  const uint64_t floor_;
  std::string refused_;
};

// `count` rows spread evenly over [0, n), the first and the last included.
std::vector<int64_t> SampleRows(int64_t n) {
  std::vector<int64_t> rows;
  if (n <= kSampleRows) {
    for (int64_t r = 0; r < n; ++r) rows.push_back(r);
    return rows;
  }
  for (int i = 0; i < kSampleRows; ++i) rows.push_back(i * (n - 1) / (kSampleRows - 1));
  return rows;
}

const char* MetricName(faiss::MetricType metric) {
  switch (metric) {
    case faiss::METRIC_INNER_PRODUCT: return "inner product";
    case faiss::METRIC_L2: return "L2";
    default: return "another metric";
  }
}

// d, ntotal, metric and trained state of `index` (`what` names the part in messages).
absl::Status CheckHeader(const faiss::Index& index, int64_t ntotal, int dim, absl::string_view what,
                         const std::string& path) {
  if (index.d != dim) {
    return Loss(path, absl::StrCat(what, " has dimension ", index.d, ", the bundle's item vectors ", dim));
  }
  if (index.ntotal != ntotal) {
    return Loss(path, absl::StrCat(what, " holds ", index.ntotal, " vectors, the bundle has ", ntotal, " items"));
  }
  if (index.metric_type != faiss::METRIC_INNER_PRODUCT) {
    return Loss(path, absl::StrCat(what, " uses the ", MetricName(index.metric_type),
                                   " metric, the server searches by inner product"));
  }
  if (!index.is_trained) return Loss(path, absl::StrCat(what, " is not trained"));
  return absl::OkStatus();
}

// The bundle vector of `row` against what the index stores for it, decoded into `stored`:
// as close as a fresh encoding of the bundle vector by the same index (codes are lossy;
// an index of other vectors decodes far from these).
absl::Status CheckCodedRow(const faiss::Index& index, const float* stored, const FaissFileExpectation& e,
                           int64_t row, const std::string& path) {
  const float* v = e.vectors + row * e.dim;
  std::vector<uint8_t> code(index.sa_code_size());
  std::vector<float> fresh(e.dim);
  index.sa_encode(1, v, code.data());
  index.sa_decode(1, code.data(), fresh.data());
  double stored_error = 0, fresh_error = 0;
  for (int k = 0; k < e.dim; ++k) {
    stored_error += (static_cast<double>(stored[k]) - v[k]) * (static_cast<double>(stored[k]) - v[k]);
    fresh_error += (static_cast<double>(fresh[k]) - v[k]) * (static_cast<double>(fresh[k]) - v[k]);
  }
  if (!(stored_error <= 1.02 * fresh_error + 1e-4)) {
    return Loss(path, absl::StrCat("row ", row, ": the code stored for it decodes at distance ", std::sqrt(stored_error),
                                   " from the bundle's item vector, a fresh encoding at ", std::sqrt(fresh_error),
                                   ": an index of other vectors"));
  }
  return absl::OkStatus();
}

absl::Status CheckFloatRow(const float* stored, const FaissFileExpectation& e, int64_t row, const std::string& path) {
  if (std::memcmp(stored, e.vectors + row * e.dim, sizeof(float) * e.dim) != 0) {
    return Loss(path, absl::StrCat("row ", row, ": the vector stored for it is not the bundle's item vector: an "
                                   "index of other vectors"));
  }
  return absl::OkStatus();
}

absl::Status CheckScalarQuantizer(const faiss::ScalarQuantizer& got, const faiss::ScalarQuantizer& ref,
                                  const std::string& path) {
  if (got.qtype != ref.qtype || got.d != ref.d || got.code_size != ref.code_size) {
    return Loss(path, absl::StrCat("scalar quantizer of type ", static_cast<int>(got.qtype), ", d ", got.d,
                                   ", code size ", got.code_size, "; the record's factory has type ",
                                   static_cast<int>(ref.qtype), ", d ", ref.d, ", code size ", ref.code_size));
  }
  // What the codecs read: a min and a range per dimension (SQ8), nothing (fp16).
  size_t trained = 0;
  if (ref.qtype == faiss::ScalarQuantizer::QT_8bit) {
    trained = 2 * ref.d;
  } else if (ref.qtype != faiss::ScalarQuantizer::QT_fp16) {
    return Loss(path, "scalar quantizer of a type this server does not build");
  }
  if (got.trained.size() != trained) {
    return Loss(path, absl::StrCat("scalar quantizer with ", got.trained.size(), " trained values, expected ", trained));
  }
  return absl::OkStatus();
}

absl::Status CheckProductQuantizer(const faiss::ProductQuantizer& got, const faiss::ProductQuantizer& ref,
                                   const std::string& path) {
  if (got.d != ref.d || got.M != ref.M || got.nbits != ref.nbits || got.dsub != ref.dsub || got.ksub != ref.ksub ||
      got.code_size != ref.code_size) {
    return Loss(path, absl::StrCat("product quantizer PQ", got.M, "x", got.nbits, " over d ", got.d,
                                   "; the record's factory has PQ", ref.M, "x", ref.nbits, " over d ", ref.d));
  }
  if (got.centroids.size() != got.d * got.ksub) {
    return Loss(path, absl::StrCat("product quantizer with ", got.centroids.size(), " centroid values, expected ",
                                   got.d * got.ksub));
  }
  return absl::OkStatus();
}

absl::Status CheckHnsw(const faiss::IndexHNSW& index, const faiss::IndexHNSW& ref, const FaissFileExpectation& e,
                       const std::string& path) {
  const auto* storage = dynamic_cast<const faiss::IndexFlat*>(index.storage);
  if (storage == nullptr || ref.storage == nullptr || typeid(*index.storage) != typeid(*ref.storage)) {
    return Loss(path, "the HNSW graph's storage is not a flat inner-product index");
  }
  RETURN_IF_ERROR(CheckHeader(*storage, e.ntotal, e.dim, "its storage", path));
  if (storage->codes.size() != static_cast<size_t>(e.ntotal) * e.dim * sizeof(float)) {
    return Loss(path, "the HNSW storage's size does not match its vector count");
  }
  const faiss::HNSW& g = index.hnsw;
  const faiss::HNSW& r = ref.hnsw;
  // Neighbours per level follow from M: equal lists, equal M.
  if (g.cum_nneighbor_per_level != r.cum_nneighbor_per_level) {
    const int got_m = g.cum_nneighbor_per_level.size() > 1 ? g.cum_nneighbor_per_level[1] / 2 : 0;
    return Loss(path, absl::StrCat("an HNSW graph of M ", got_m, ", the record says ", e.canonical_factory));
  }
  const std::vector<int>& cum = g.cum_nneighbor_per_level;
  const int64_t n = e.ntotal;
  const int top = static_cast<int>(cum.size()) - 1;  // levels[i] is in 1..top
  if (g.levels.size() != static_cast<size_t>(n) || g.offsets.size() != static_cast<size_t>(n) + 1 ||
      (n > 0 && g.offsets[0] != 0)) {
    return Loss(path, "the HNSW graph's levels or offsets do not match its vector count");
  }
  int max_level = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int level = g.levels[i];
    if (level < 1 || level > top) return Loss(path, absl::StrCat("HNSW node ", i, ": level ", level, " out of range"));
    max_level = std::max(max_level, level - 1);
    if (g.offsets[i + 1] < g.offsets[i] || g.offsets[i + 1] - g.offsets[i] != static_cast<size_t>(cum[level])) {
      return Loss(path, absl::StrCat("HNSW node ", i, ": its neighbour list has the wrong size"));
    }
  }
  if (g.offsets[n] != g.neighbors.size()) return Loss(path, "the HNSW offsets do not cover its neighbour lists");
  if (g.max_level != max_level ||
      (n > 0 ? g.entry_point < 0 || g.entry_point >= n || g.levels[g.entry_point] - 1 != max_level
             : g.entry_point != -1)) {
    return Loss(path, "the HNSW entry point or top level is not the graph's");
  }
  // Every link names a node that has the level it is followed at (a search at level L
  // reads the level-L list of each node it reaches).
  for (int64_t i = 0; i < n; ++i) {
    for (int level = 0; level < g.levels[i]; ++level) {
      for (size_t j = g.offsets[i] + cum[level]; j < g.offsets[i] + cum[level + 1]; ++j) {
        const int v = g.neighbors[j];
        if (v == -1) continue;
        if (v < 0 || v >= n || g.levels[v] <= level) {
          return Loss(path, absl::StrCat("HNSW node ", i, " links to ", v, " at level ", level,
                                         ", which is not a node of that level"));
        }
      }
    }
  }
  if (g.efSearch < 1 || g.efSearch > kMaxFileEfSearch || g.upper_beam != r.upper_beam) {
    return Loss(path, absl::StrCat("HNSW search settings out of range (efSearch ", g.efSearch, ")"));
  }
  for (int64_t row : SampleRows(n)) {
    RETURN_IF_ERROR(CheckFloatRow(storage->get_xb() + row * e.dim, e, row, path));
  }
  return absl::OkStatus();
}

absl::Status CheckIvf(faiss::IndexIVF& index, const faiss::IndexIVF& ref, const FaissFileExpectation& e,
                      const std::string& path) {
  const size_t nlist = ref.nlist;
  if (index.nlist != nlist) {
    return Loss(path, absl::StrCat("an IVF index of ", index.nlist, " lists, the record says ", e.canonical_factory));
  }
  if (index.quantizer == nullptr || ref.quantizer == nullptr ||
      typeid(*index.quantizer) != typeid(*ref.quantizer)) {
    return Loss(path, "the IVF coarse quantizer is not a flat inner-product index");
  }
  if (absl::Status s = CheckHeader(*index.quantizer, static_cast<int64_t>(nlist), e.dim, "its coarse quantizer", path);
      !s.ok()) {
    return s;
  }
  if (index.code_size != ref.code_size) {
    return Loss(path, absl::StrCat("IVF codes of ", index.code_size, " bytes, the record's factory makes ",
                                   ref.code_size));
  }
  if (index.direct_map.type != faiss::DirectMap::NoMap || index.nprobe < 1 || index.nprobe > nlist) {
    return Loss(path, "IVF settings out of range (direct map, nprobe)");
  }
  if (const auto* sq = dynamic_cast<const faiss::IndexIVFScalarQuantizer*>(&index)) {
    const auto& ref_sq = dynamic_cast<const faiss::IndexIVFScalarQuantizer&>(ref);
    if (sq->by_residual != ref_sq.by_residual) return Loss(path, "IVF,SQ residual encoding differs from the factory's");
    RETURN_IF_ERROR(CheckScalarQuantizer(sq->sq, ref_sq.sq, path));
  }
  if (const auto* pq = dynamic_cast<const faiss::IndexIVFPQ*>(&index)) {
    const auto& ref_pq = dynamic_cast<const faiss::IndexIVFPQ&>(ref);
    RETURN_IF_ERROR(CheckProductQuantizer(pq->pq, ref_pq.pq, path));
    if (pq->by_residual != ref_pq.by_residual || pq->polysemous_ht != ref_pq.polysemous_ht) {
      return Loss(path, "IVF,PQ encoding settings differ from the factory's");
    }
  }
  faiss::InvertedLists* lists = index.invlists;
  if (lists == nullptr || lists->nlist != nlist || lists->code_size != index.code_size) {
    return Loss(path, "the IVF inverted lists do not match the index");
  }
  auto* mapped = dynamic_cast<faiss::OnDiskInvertedLists*>(lists);
  if (mapped == nullptr && dynamic_cast<faiss::ArrayInvertedLists*>(lists) == nullptr) {
    return Loss(path, "IVF inverted lists of a kind this server does not read");
  }
  if (mapped != nullptr) {
    // FAISS checks where the lists start, not where they end: each must lie in the
    // mapping (a search reads codes[size * code_size] then ids[size] from its offset).
    const uint64_t entry = index.code_size + sizeof(faiss::Index::idx_t);
    for (size_t l = 0; l < nlist; ++l) {
      const faiss::OnDiskOneList& list = mapped->lists[l];
      if (list.size == 0) continue;
      if (list.capacity != list.size || list.offset > mapped->totsize || list.size > (mapped->totsize - list.offset) / entry) {
        return Loss(path, absl::StrCat("IVF list ", l, " (", list.size, " entries) extends past the end of the file"));
      }
    }
    // A search would otherwise start up to 32 threads per call to read lists ahead.
    mapped->prefetch_nthread = 0;
  }
  // Every row in exactly one list: ids in range, none twice, as many as the items.
  const std::vector<int64_t> sample = SampleRows(e.ntotal);
  absl::flat_hash_map<int64_t, std::pair<size_t, size_t>> where;  // sample row -> (list, offset)
  for (int64_t row : sample) where[row] = {nlist, 0};
  std::vector<uint8_t> seen(static_cast<size_t>(e.ntotal), 0);
  uint64_t total = 0;
  for (size_t l = 0; l < nlist; ++l) {
    const size_t size = lists->list_size(l);
    if (size == 0) continue;
    total += size;
    if (total > static_cast<uint64_t>(e.ntotal)) {
      return Loss(path, absl::StrCat("the IVF lists hold more entries than the ", e.ntotal, " items"));
    }
    faiss::InvertedLists::ScopedIds ids(lists, l);
    // memcpy: in a memory-mapped file the ids are not 8-byte aligned (FAISS writes no padding).
    const auto* raw = reinterpret_cast<const unsigned char*>(ids.get());
    for (size_t j = 0; j < size; ++j) {
      int64_t id = 0;
      std::memcpy(&id, raw + j * sizeof(id), sizeof(id));
      if (id < 0 || id >= e.ntotal || seen[id] != 0) {
        return Loss(path, absl::StrCat("IVF list ", l, " holds row ", id, id >= 0 && id < e.ntotal ? " twice" : ", out of range"));
      }
      seen[id] = 1;
      if (const auto it = where.find(id); it != where.end()) it->second = {l, j};
    }
  }
  if (total != static_cast<uint64_t>(e.ntotal)) {
    return Loss(path, absl::StrCat("the IVF lists hold ", total, " entries, the bundle has ", e.ntotal, " items"));
  }
  const bool flat = dynamic_cast<const faiss::IndexIVFFlat*>(&index) != nullptr;
  std::vector<float> decoded(e.dim);
  for (int64_t row : sample) {
    const auto [l, offset] = where[row];
    if (flat) {
      faiss::InvertedLists::ScopedCodes codes(lists, l);
      const auto* stored = reinterpret_cast<const float*>(codes.get() + offset * index.code_size);
      RETURN_IF_ERROR(CheckFloatRow(stored, e, row, path));
    } else {
      index.reconstruct_from_offset(static_cast<int64_t>(l), static_cast<int64_t>(offset), decoded.data());
      RETURN_IF_ERROR(CheckCodedRow(index, decoded.data(), e, row, path));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCodes(const faiss::IndexFlatCodes& index, const faiss::IndexFlatCodes& ref,
                        const FaissFileExpectation& e, const std::string& path) {
  if (const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(&index)) {
    if (absl::Status s = CheckScalarQuantizer(sq->sq, dynamic_cast<const faiss::IndexScalarQuantizer&>(ref).sq, path);
        !s.ok()) {
      return s;
    }
  }
  if (const auto* pq = dynamic_cast<const faiss::IndexPQ*>(&index)) {
    const auto& ref_pq = dynamic_cast<const faiss::IndexPQ&>(ref);
    RETURN_IF_ERROR(CheckProductQuantizer(pq->pq, ref_pq.pq, path));
    if (pq->search_type != ref_pq.search_type || pq->encode_signs != ref_pq.encode_signs ||
        pq->polysemous_ht != ref_pq.polysemous_ht) {
      return Loss(path, absl::StrCat("PQ search settings differ from the factory's (search type ", pq->search_type,
                                     ", polysemous threshold ", pq->polysemous_ht, ")"));
    }
  }
  if (index.code_size != ref.code_size || index.codes.size() != static_cast<size_t>(e.ntotal) * index.code_size) {
    return Loss(path, absl::StrCat("codes of ", index.code_size, " bytes (", index.codes.size(),
                                   " in all); the record's factory makes ", ref.code_size, " per item"));
  }
  std::vector<float> decoded(e.dim);
  for (int64_t row : SampleRows(e.ntotal)) {
    index.reconstruct(row, decoded.data());
    RETURN_IF_ERROR(CheckCodedRow(index, decoded.data(), e, row, path));
  }
  return absl::OkStatus();
}

// An untrained index of the factory, written and read back: the classes and parameters a
// file of that factory reads into, and its fourcc.
absl::StatusOr<std::unique_ptr<faiss::Index>> ReferenceIndex(const FaissFileExpectation& e, std::string* fourcc) {
  try {
    std::unique_ptr<faiss::Index> fresh(
        faiss::index_factory(e.dim, e.canonical_factory.c_str(), faiss::METRIC_INNER_PRODUCT));
    faiss::VectorIOWriter writer;
    faiss::write_index(fresh.get(), &writer);
    if (writer.data.size() < 4) return absl::InternalError("index reference: empty");
    fourcc->assign(reinterpret_cast<const char*>(writer.data.data()), 4);
    faiss::VectorIOReader reader;
    reader.data = std::move(writer.data);
    return std::unique_ptr<faiss::Index>(faiss::read_index(&reader));
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("index ", e.canonical_factory, ": ", ex.what()));
  }
}

struct FileCloser {
  void operator()(FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};

}  // namespace

absl::Status WriteFaissIndexFile(const faiss::Index& index, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  std::unique_ptr<FILE, FileCloser> file(::fdopen(fd, "wb"));
  if (file == nullptr) {
    ::close(fd);
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  absl::Status status;
  try {
    faiss::write_index(&index, file.get());
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("cannot write ", path, ": ", e.what()));
  }
  if (status.ok() && (std::fflush(file.get()) != 0 || ::fsync(fd) != 0)) {
    status = absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  if (std::fclose(file.release()) != 0 && status.ok()) {
    status = absl::InternalError(absl::StrCat("cannot close ", path, ": ", std::strerror(errno)));
  }
  if (!status.ok()) ::unlink(path.c_str());
  return status;
}

absl::StatusOr<std::unique_ptr<faiss::Index>> ReadFaissIndexFile(int fd, const std::string& path,
                                                                 const FaissFileExpectation& e) {
  std::string want_fourcc;
  ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> reference, ReferenceIndex(e, &want_fourcc));
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  // Only the reader of the recorded kind runs: the file must start with its fourcc.
  unsigned char head[4] = {};
  if (bytes < 4 || ::pread(fd, head, 4, 0) != 4) return Loss(path, "too short to be a FAISS index");
  if (std::memcmp(head, want_fourcc.data(), 4) != 0) {
    return Loss(path, absl::StrCat("holds a FAISS ", FourccName(head), " index, the MANIFEST records ",
                                   e.canonical_factory, " (",
                                   FourccName(reinterpret_cast<const unsigned char*>(want_fourcc.data())), ")"));
  }
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  std::unique_ptr<FILE, FileCloser> file(::fdopen(copy, "rb"));
  if (file == nullptr) {
    ::close(copy);
    return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  if (std::fseek(file.get(), 0, SEEK_SET) != 0) {
    return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  GuardedReader reader(file.get(), bytes, std::max<uint64_t>(uint64_t{1} << 20, static_cast<uint64_t>(e.ntotal)));
  reader.name = path;
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::read_index(&reader, faiss::IO_FLAG_MMAP));
  } catch (const std::exception& ex) {
    return Loss(path, absl::StrCat("not a readable FAISS index: ",
                                   reader.refused().empty() ? std::string(ex.what()) : reader.refused()));
  }
  if (index == nullptr) return Loss(path, "not a readable FAISS index");
  // The mapping (IVF) outlives the stream: the file is closed when `file` goes.
  try {
    const faiss::Index& read = *index;
    const faiss::Index& expected_class = *reference;
    if (typeid(read) != typeid(expected_class)) {
      return Loss(path, absl::StrCat("holds a FAISS index of another class than ", e.canonical_factory, " reads into"));
    }
    RETURN_IF_ERROR(CheckHeader(*index, e.ntotal, e.dim, "the index", path));
    if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get())) {
      if (absl::Status s = CheckHnsw(*hnsw, dynamic_cast<const faiss::IndexHNSW&>(*reference), e, path); !s.ok()) {
        return s;
      }
    } else if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index.get())) {
      if (absl::Status s = CheckIvf(*ivf, dynamic_cast<const faiss::IndexIVF&>(*reference), e, path); !s.ok()) {
        return s;
      }
    } else if (auto* codes = dynamic_cast<faiss::IndexFlatCodes*>(index.get());
               codes != nullptr && dynamic_cast<const faiss::IndexFlat*>(codes) == nullptr) {
      if (absl::Status s = CheckCodes(*codes, dynamic_cast<const faiss::IndexFlatCodes&>(*reference), e, path);
          !s.ok()) {
        return s;
      }
    } else {
      return Loss(path, "a FAISS index of a kind this server does not read from a file");
    }
  } catch (const std::exception& ex) {
    return Loss(path, absl::StrCat("checking the index: ", ex.what()));
  }
  return index;
}

}  // namespace twotower
