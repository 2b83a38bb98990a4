// The model bundle: everything a server needs to serve a trained model, in one directory.
//
//   MANIFEST            text BundleManifest: format version, model version, config (the
//                       feature schema), dims, and the SHA-256 of every file below
//   user_tower.pb       TowerState: user feature state (vocabularies, statistics) + weights
//   item_tower.pb       TowerState: same for items
//   users.pb            EncodedTable: known users' encoded features (ids -> rows)
//   items.pb            EncodedTable: the catalogue's encoded features
//   item_embeddings.pb  ItemEmbeddings: catalogue ids + L2-normalised item vectors
//   embedding_tables.f32  the towers' embedding tables (format 2): raw little-endian
//                       float32, each table 64-byte aligned where its tensor in the tower
//                       file says (Tensor.offset). Readers memory-map it read-only, so
//                       a server's id tables (64 B per item at 16-d) take no heap.
//   index.faiss         optional: the item index (faiss::write_index), built as the
//                       MANIFEST's `index` records; servers read it instead of building
//
// Written atomically (temp directory, fsync, read back with ReadBundle, rename): a bundle
// ReadBundle refuses is never published. Read back with every check a server needs before
// it trusts a file: the MANIFEST lists exactly the files above, each a regular file (not
// a symlink, FIFO or device) of the size it declares; every item vector is finite and
// unit-length. index.faiss is only opened and checksummed here (bundle/ does not know
// FAISS): index/bundle_index.h reads it, as untrusted input. embedding_tables.f32 is
// checksummed with read() (not through the mapping, whose pages would all become
// resident), then mapped: a loaded bundle's tables read from the file's page cache for as
// long as the Bundle (or a copy of its towers) lives, so bundle files must never be
// modified in place (a truncation would fault a reader with SIGBUS).
#ifndef TWOTOWER_BUNDLE_BUNDLE_H_
#define TWOTOWER_BUNDLE_BUNDLE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bundle/seen_items.h"
#include "features/encoded_table.h"
#include "features/feature_encoder.h"
#include "model/tower.h"
#include "twotower/v1/bundle.pb.h"
#include "util/file.h"

namespace twotower {

// The bundle format, the names of the config's enum values in the MANIFEST and the
// embedding tables file included: ReadBundle refuses any other version by its number,
// before parsing the MANIFEST.
inline constexpr int kBundleFormatVersion = 2;

// Largest binary bundle file: one protobuf message, which protobuf caps at 2 GiB - 1.
inline constexpr int64_t kMaxBundleFileBytes = std::numeric_limits<int32_t>::max();
// The persisted item index: its file name, and its largest size (FAISS writes one file of
// any size, not a protobuf message: several GB at 10M+ items; the bound only keeps a
// corrupt MANIFEST from asking for a hash of a petabyte).
inline constexpr char kBundleIndexFile[] = "index.faiss";
inline constexpr int64_t kMaxBundleIndexBytes = int64_t{1} << 40;
// The towers' embedding tables (format 2), and the alignment of each table in it. Its
// largest size is kMaxBundleIndexBytes.
inline constexpr char kBundleTablesFile[] = "embedding_tables.f32";
inline constexpr int64_t kBundleTableAlignment = 64;
// Largest MANIFEST (text: the config and the file list).
inline constexpr int64_t kMaxManifestBytes = 4 << 20;
// How far from 1 the L2 norm of a stored item vector may be.
inline constexpr double kItemVectorNormTolerance = 1e-3;

// One side of the model: how to encode an entity and the tower that embeds it.
struct TowerModel {
  FeatureEncoder encoder;
  Tower tower;
};

// Entities with their encoded features, row-aligned with `ids`.
struct EncodedEntities {
  std::vector<std::string> ids;
  EncodedTable rows;
};

// A bundle's index.faiss as ReadBundle leaves it: open (no symlink followed, a regular
// file), its size and SHA-256 those of the MANIFEST. Readers read it through `fd`, so
// what they read is the file that was checked even if its name is replaced meanwhile.
struct BundleIndexFile {
  std::string path;  // <bundle>/index.faiss, for messages
  uint64_t bytes = 0;
  ScopedFd fd;
};

struct Bundle {
  v1::BundleManifest manifest;  // config, versions; files are filled in by WriteBundle
  TowerModel user;
  TowerModel item;
  EncodedEntities users;
  EncodedEntities items;       // the catalogue
  // Per user row of `users`, the rows of `items` the user interacted with in training
  // (empty: a bundle written without them).
  SeenItems seen_items;
  std::vector<float> item_vectors;  // items.ids.size() x embedding_dim
  // The persisted item index (manifest.index() says how it was built), or null: set by
  // ReadBundle; WriteBundle writes one only when given a BundleIndexWriter.
  std::shared_ptr<const BundleIndexFile> index_file;

  int embedding_dim() const { return item.tower.output_dim(); }
  const std::string& model_version() const { return manifest.model_version(); }
};

// A fresh model version id: UTC time + random suffix, e.g. "20261128T230102Z-3fa9c2d1".
std::string NewModelVersion();

// A model version is a plain file-name component (servers name files after it):
// 1..128 characters of [A-Za-z0-9._-], not "." or "..". INVALID_ARGUMENT otherwise.
absl::Status ValidateModelVersion(absl::string_view version);

// How WriteBundle adds an index.faiss (index/bundle_index.h makes one from an ItemIndex).
struct BundleIndexWriter {
  v1::BundleIndex record;  // copied into the MANIFEST's `index`
  // Writes the index file at `path` (a new file in the temp directory) and fsyncs it.
  std::function<absl::Status(const std::string& path)> write;
  // Optional: run on the bundle as read back, before it is published (e.g. read the index
  // as a server would). An error publishes nothing.
  std::function<absl::Status(const Bundle& read_back)> check;
};

// Writes `bundle` to `dir` (which must not exist) atomically: into a sibling temp
// directory first, fsynced, read back with ReadBundle (an error, and nothing published,
// if that refuses it), then renamed. The temp directory is removed on failure. With
// `index`, the bundle carries an index.faiss written by it (listed with its size and
// SHA-256, the MANIFEST's `index` its record); without, none (whatever `bundle` carried).
absl::Status WriteBundle(const Bundle& bundle, const std::string& dir,
                         const BundleIndexWriter* index = nullptr);

// Reads and validates a bundle: manifest format and model_version, the file list (exactly
// the format's files), each file a regular file (opened without following symlinks and
// without blocking, read up to the size the manifest declares), checksums, shapes against
// the schema, encoded rows within the vocabularies, unique ids, every item vector finite
// and unit-length, and a forward pass over a sample of items that reproduces their
// stored vectors. `dir` itself may be reached through a symlink. An index.faiss (listed
// if and only if the MANIFEST has an `index`) is opened and its size and SHA-256 checked
// in a streaming pass (up to kMaxBundleIndexBytes, never held in memory), not parsed: it
// is left open in Bundle::index_file.
absl::StatusOr<Bundle> ReadBundle(const std::string& dir);

// The item vectors of the bundle in `dir` again, for an index rebuilt from a bundle
// whose vectors the server no longer holds (Catalogue::WithIndex over lossy codes).
// `manifest` is the MANIFEST ReadBundle returned for it: item_embeddings.pb is read as
// ReadBundle reads it (a regular file, not followed through a symlink, at most the size
// listed) and must have the size and SHA-256 listed there, so the vectors are the ones
// that were loaded. FAILED_PRECONDITION for an empty `dir`; NOT_FOUND, DATA_LOSS as
// ReadBundle otherwise.
absl::StatusOr<std::vector<float>> ReadItemVectors(const std::string& dir, const v1::BundleManifest& manifest);

// Points `link` (a symlink, e.g. bundles/latest) at `target` atomically.
absl::Status UpdateSymlink(const std::string& target, const std::string& link);

}  // namespace twotower

#endif  // TWOTOWER_BUNDLE_BUNDLE_H_
