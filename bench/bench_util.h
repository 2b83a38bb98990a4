// What every benchmark program does first.
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

}  // namespace twotower

#endif  // TWOTOWER_BENCH_BENCH_UTIL_H_
