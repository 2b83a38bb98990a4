// A FAISS index in a file (a bundle's index.faiss): written with faiss::write_index, read
// back with faiss::read_index as untrusted input. FAISS throws on what it detects; these
// functions turn that into Status, and check what it does not: the kind of index and its
// parameters against the factory string the bundle records, the item count, dimension and
// metric, the internal structure a search follows (HNSW links, IVF list offsets and ids),
// and a sample of the stored vectors against the bundle's.
//
// What is not defended: FAISS's reader itself is not hardened against crafted input (in
// 1.7.3 a product quantizer with M = 0 divides by zero while it is read). A file reaches it
// only after its SHA-256 matched the MANIFEST, and only if it starts with the fourcc of the
// recorded kind of index (so only that kind's reader runs); whoever can write a bundle's
// MANIFEST and index file can still crash the reader. Counts in the file are bounded by
// the file's own size (a count of more elements than the rest of the file holds is
// refused before FAISS allocates for it).
#ifndef TWOTOWER_INDEX_FAISS_FILE_H_
#define TWOTOWER_INDEX_FAISS_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace faiss {
struct Index;
}

namespace twotower {

// Writes `index` with faiss::write_index to the new file `path` (refused if it exists),
// fsynced. On failure nothing is left at `path`.
absl::Status WriteFaissIndexFile(const faiss::Index& index, const std::string& path);

// What a file must hold.
struct FaissFileExpectation {
  std::string canonical_factory;  // CanonicalIndexFactory form, not "Flat"
  int64_t ntotal = 0;             // the items, rows 0..ntotal-1
  int dim = 0;
  const float* vectors = nullptr;  // ntotal x dim: the vectors the index was built from
};

// Reads the index in the open file `fd` (`path` names it in messages) from its start, IVF
// inverted lists memory-mapped (IO_FLAG_MMAP; prefetch threads off), and checks it per
// `expected` (see above). DATA_LOSS naming `path` for a file that is not what `expected`
// describes, FAISS's exceptions included. Moves the file offset of `fd` (do not read one
// fd from two threads at once).
absl::StatusOr<std::unique_ptr<faiss::Index>> ReadFaissIndexFile(int fd, const std::string& path,
                                                                 const FaissFileExpectation& expected);

}  // namespace twotower

#endif  // TWOTOWER_INDEX_FAISS_FILE_H_
