// twotower_synth: writes the embedded default (synthetic) dataset as CSV files.
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <string>

#include "absl/flags/flag.h"
#include "util/program_usage.h"
#include "absl/flags/usage.h"
#include "dataset/synthetic.h"

ABSL_FLAG(std::string, out_dir, "", "Output folder (created if missing)");
ABSL_FLAG(int, users, 2000, "Number of users");
ABSL_FLAG(int, items, 1000, "Number of items");
ABSL_FLAG(int, clusters, 8, "Number of hidden taste clusters");
ABSL_FLAG(uint64_t, seed, 1, "Random seed");

int main(int argc, char** argv) {
  twotower::ParseCommandLineWithUsage(argc, argv, "Writes the synthetic default dataset: twotower_synth --out_dir DIR");
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (out_dir.empty()) {
    std::fprintf(stderr, "error: --out_dir is required\n");
    return 2;
  }
  std::error_code mkdir_error;
  std::filesystem::create_directories(out_dir, mkdir_error);
  if (mkdir_error) {
    std::fprintf(stderr, "error: cannot create %s: %s\n", out_dir.c_str(),
                 mkdir_error.message().c_str());
    return 1;
  }
  twotower::SyntheticOptions options;
  options.users = absl::GetFlag(FLAGS_users);
  options.items = absl::GetFlag(FLAGS_items);
  options.clusters = absl::GetFlag(FLAGS_clusters);
  options.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = twotower::WriteSyntheticDataset(options, out_dir); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote users.csv items.csv train.csv test_warm.csv test_cold.csv to %s\n",
              out_dir.c_str());
  return 0;
}
