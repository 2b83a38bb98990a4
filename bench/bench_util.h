// What the benchmark programs share: their start, and the data section of the configs
// they build in memory.
#ifndef TWOTOWER_BENCH_BENCH_UTIL_H_
#define TWOTOWER_BENCH_BENCH_UTIL_H_

#include "absl/strings/string_view.h"
#include "model/tower.h"
#include "util/program_usage.h"

namespace twotower {

// Parses the flags (--help prints `usage`; see ParseCommandLineWithUsage), then
// UseSingleThreadedBlas(): the benchmarks measure our own threads, not BLAS's.
inline void InitBenchmark(int argc, char** argv, absl::string_view usage) {
  ParseCommandLineWithUsage(argc, argv, usage);
  UseSingleThreadedBlas();
}

// The data section of a TrainerConfig for tables the benchmark builds in code (path "-"):
// users with a categorical "segment" and items with a categorical "genre", each the
// table's column 1, 8-d embeddings. A config is this followed by its towers and training.
inline constexpr char kSegmentGenreData[] = R"pb(
  data {
    train { table { path: "-" } user_column { index: 0 } item_column { index: 1 } }
    users { table { path: "-" } id_column { index: 0 }
            features { name: "segment" kind: KIND_CATEGORICAL column { index: 1 } embedding_dim: 8 } }
    items { table { path: "-" } id_column { index: 0 }
            features { name: "genre" kind: KIND_CATEGORICAL column { index: 1 } embedding_dim: 8 } }
  }
)pb";

}  // namespace twotower

#endif  // TWOTOWER_BENCH_BENCH_UTIL_H_
