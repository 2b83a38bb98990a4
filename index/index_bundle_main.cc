// twotower_index_bundle: adds a persisted item index to an existing bundle, without
// retraining: reads the bundle (every check a server makes), builds the index from its
// item vectors, and writes a NEW bundle directory with it (bundles are immutable), same
// model version.
//
//   twotower_index_bundle --bundle bundles/20261128T230102Z-3fa9c2d1 --index IVF4096,Flat
//       --out bundles/20261128T230102Z-3fa9c2d1-ivf4096
//
// --index Flat writes the bundle without an index file.
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bundle/bundle.h"
#include "index/bundle_index.h"
#include "index/item_index.h"
#include "model/tower.h"
#include "util/program_usage.h"

ABSL_FLAG(std::string, bundle, "", "Bundle directory to read (required)");
ABSL_FLAG(std::string, index, "",
          "FAISS index_factory string of the index to persist (the forms the server's --index "
          "takes), e.g. IVF4096,Flat or HNSW32; Flat: no index file (required)");
ABSL_FLAG(std::string, out, "", "New bundle directory to write (must not exist; required)");

namespace {

int Run(int argc, char** argv) {
  twotower::ParseCommandLineWithUsage(
      argc, argv,
      "Adds a persisted item index to a bundle: twotower_index_bundle --bundle DIR --index FACTORY --out NEW_DIR");
  twotower::UseSingleThreadedBlas();
  const std::string in = absl::GetFlag(FLAGS_bundle), out = absl::GetFlag(FLAGS_out);
  const std::string factory = absl::GetFlag(FLAGS_index);
  if (in.empty() || out.empty() || factory.empty()) {
    std::fprintf(stderr, "error: --bundle, --index and --out are required\n");
    return 2;
  }
  if (absl::Status s = twotower::ValidateIndexOptions({factory, 0, 0}); !s.ok()) {
    std::fprintf(stderr, "error: --index: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<twotower::Bundle> bundle = twotower::ReadBundle(in);
  if (!bundle.ok()) {
    std::fprintf(stderr, "error: cannot read bundle %s: %s\n", in.c_str(), bundle.status().ToString().c_str());
    return 1;
  }
  if (absl::Status s = twotower::CheckIndexFits(factory, static_cast<int64_t>(bundle->items.ids.size()),
                                                bundle->embedding_dim());
      !s.ok()) {
    std::fprintf(stderr, "error: --index: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  twotower::IndexBuildReport report;
  if (absl::Status s = twotower::WriteBundleWithIndex(*bundle, out, factory, &report); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  if (report.file_bytes > 0) {
    std::printf("bundle: %s (model version %s; index %s built in %.1f s, %s %llu bytes)\n", out.c_str(),
                bundle->model_version().c_str(), factory.c_str(), report.build_seconds, twotower::kBundleIndexFile,
                static_cast<unsigned long long>(report.file_bytes));
  } else {
    std::printf("bundle: %s (model version %s; no index file)\n", out.c_str(), bundle->model_version().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
