// The item index persisted in a bundle (index.faiss, see bundle/bundle.h): writing a
// bundle with one, and choosing at load between reading it and building an index.
//
// Which index serves (IndexOptions::factory, e.g. the server's --index):
//   ""                    the bundle's: read from its index.faiss when it carries one,
//                         else "Flat" (the exact scan, which needs no file);
//   the bundle's factory  read from index.faiss (canonical forms compared: "HNSW32" and
//                         "HNSW32,Flat" are one index);
//   anything else         built in memory from the item vectors, as without a file.
// Reading never falls back to building: an index.faiss that does not check out
// (ItemIndex::Load) is an error, and a server keeps serving its current model.
#ifndef TWOTOWER_INDEX_BUNDLE_INDEX_H_
#define TWOTOWER_INDEX_BUNDLE_INDEX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bundle/bundle.h"
#include "index/item_index.h"

namespace twotower {

enum class IndexSource {
  kBuilt,   // built from the item vectors (at load, or by a rebuild)
  kBundle,  // read from the bundle's index.faiss
};

// ValidateIndexOptions, with the empty factory ("the bundle's") allowed; its ef_search and
// nprobe are checked against the bounds of any index (and against the index's own when
// it is loaded). Callable when flags are parsed.
absl::Status ValidateIndexRequest(const IndexOptions& options);

// `options` with an empty factory replaced by the bundle's: its index record's factory
// when it carries an index, else "Flat".
IndexOptions ResolveIndexOptions(const Bundle& bundle, const IndexOptions& options);

// The index over `bundle`'s items that `options` asks for (see above); `vectors` are the
// bundle's item vectors (taken: a caller that moved them out of the bundle frees them
// as soon as the index has its copy); *source says whether it was read or built.
// Errors: ItemIndex::Load's (DATA_LOSS naming the file) or Build's (INVALID_ARGUMENT);
// DATA_LOSS for an index record whose factory is not one a file can hold.
absl::StatusOr<std::unique_ptr<ItemIndex>> IndexForBundle(const Bundle& bundle, std::vector<float> vectors,
                                                          const IndexOptions& options, IndexSource* source);

struct IndexBuildReport {
  double build_seconds = 0;  // ItemIndex::Build
  uint64_t file_bytes = 0;   // index.faiss (0: none)
};

// Writes `bundle` to `dir` (WriteBundle: atomic; nothing published unless it reads back)
// with an index.faiss of `factory` built from its item vectors, recorded in the MANIFEST
// with its build parameters, and read back as a server reads it before the bundle is
// published. An empty factory or "Flat": the bundle without an index file. Same model
// version: a bundle with and one without an index are the same model. INVALID_ARGUMENT
// for a factory ValidateIndexOptions refuses or the items do not fit (CheckIndexFits).
absl::Status WriteBundleWithIndex(const Bundle& bundle, const std::string& dir, const std::string& factory,
                                  IndexBuildReport* report = nullptr);

}  // namespace twotower

#endif  // TWOTOWER_INDEX_BUNDLE_INDEX_H_
