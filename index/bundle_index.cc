#include "index/bundle_index.h"

#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>

#include <algorithm>
#include <chrono>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

constexpr char kFlat[] = "Flat";

// The bundle's index record names a factory a file can hold (not "Flat").
absl::StatusOr<std::string> RecordedCanonical(const Bundle& bundle) {
  const std::string& recorded = bundle.manifest.index().factory();
  absl::StatusOr<std::string> canonical = CanonicalIndexFactory(recorded);
  if (!canonical.ok() || *canonical == kFlat) {
    return absl::DataLossError(absl::StrCat(
        bundle.index_file->path, ": the MANIFEST's index.factory \"", recorded.substr(0, 64), "\" is not ",
        canonical.ok() ? "an index kept in a file (\"Flat\" is the exact scan)" : "a supported index"));
  }
  return canonical;
}

// What the built index reports of how it was built.
v1::BundleIndex BuildRecord(const ItemIndex& index, const std::string& factory, double seconds) {
  v1::BundleIndex record;
  record.set_factory(factory);
  record.set_faiss_version(absl::StrCat(FAISS_VERSION_MAJOR, ".", FAISS_VERSION_MINOR, ".", FAISS_VERSION_PATCH));
  record.set_build_seconds(seconds);
  const faiss::Index* faiss_index = index.faiss_index();
  if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(faiss_index)) {
    record.set_hnsw_ef_construction(hnsw->hnsw.efConstruction);
  }
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(faiss_index)) {
    record.set_kmeans_iterations(ivf->cp.niter);
    record.set_kmeans_seed(ivf->cp.seed);
    // FAISS's k-means samples at most max_points_per_centroid vectors per list.
    record.set_training_vectors(std::min<int64_t>(
        index.size(), static_cast<int64_t>(ivf->nlist) * ivf->cp.max_points_per_centroid));
  }
  return record;
}

}  // namespace

absl::Status ValidateIndexRequest(const IndexOptions& options) {
  if (!options.factory.empty()) return ValidateIndexOptions(options);
  IndexOptions any = options;
  any.factory = kFlat;  // bounds that hold for every index
  return ValidateIndexOptions(any);
}

IndexOptions ResolveIndexOptions(const Bundle& bundle, const IndexOptions& options) {
  IndexOptions resolved = options;
  if (resolved.factory.empty()) {
    resolved.factory = bundle.index_file != nullptr ? bundle.manifest.index().factory() : kFlat;
  }
  return resolved;
}

absl::StatusOr<std::unique_ptr<ItemIndex>> IndexForBundle(const Bundle& bundle, std::vector<float> vectors,
                                                          const IndexOptions& options, IndexSource* source) {
  *source = IndexSource::kBuilt;
  const IndexOptions resolved = ResolveIndexOptions(bundle, options);
  if (bundle.index_file != nullptr) {
    ASSIGN_OR_RETURN(std::string recorded, RecordedCanonical(bundle));
    absl::StatusOr<std::string> asked = CanonicalIndexFactory(resolved.factory);
    if (asked.ok() && *asked == recorded) {
      absl::StatusOr<std::unique_ptr<ItemIndex>> read =
          ItemIndex::Load(vectors, bundle.embedding_dim(), resolved, bundle.index_file->fd.get(),
                          bundle.index_file->path);
      if (read.ok()) *source = IndexSource::kBundle;
      return read;
    }
  }
  return ItemIndex::Build(std::move(vectors), bundle.embedding_dim(), resolved);
}

absl::Status WriteBundleWithIndex(const Bundle& bundle, const std::string& dir, const std::string& factory,
                                  IndexBuildReport* report) {
  IndexBuildReport ignored;
  if (report == nullptr) report = &ignored;
  *report = IndexBuildReport{};
  if (factory.empty() || factory == kFlat) return WriteBundle(bundle, dir);
  const IndexOptions options{factory, 0, 0};
  RETURN_IF_ERROR(ValidateIndexOptions(options));
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> index,
                   ItemIndex::Build(std::span<const float>(bundle.item_vectors), bundle.embedding_dim(), options));
  report->build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BundleIndexWriter writer;
  writer.record = BuildRecord(*index, factory, report->build_seconds);
  writer.write = [&](const std::string& path) {
    absl::Status saved = (index)->Save(path);
    index.reset();  // not needed past here: the check below holds a second copy
    return saved;
  };
  // Read back as a server would (after ReadBundle checked its checksum): what is
  // published, a server can load.
  writer.check = [&](const Bundle& back) -> absl::Status {
    report->file_bytes = back.index_file != nullptr ? back.index_file->bytes : 0;
    IndexSource source = IndexSource::kBuilt;
    ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> read,
                     IndexForBundle(back, back.item_vectors, IndexOptions{"", 0, 0}, &source));
    if (source != IndexSource::kBundle) return absl::InternalError("the index written is not the one read back");
    return absl::OkStatus();
  };
  return WriteBundle(bundle, dir, &writer);
}

}  // namespace twotower
