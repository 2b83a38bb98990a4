// The embedded default data: a synthetic catalogue with planted structure, so the demo
// and the tests run anywhere without downloads.
//
// Hidden model: every item belongs to one of `clusters` taste clusters and every user has
// a primary and a secondary cluster. A user clicks items drawn without replacement from
// softmax(affinity * [item cluster == primary] + 0.5 * affinity * [== secondary]
// + log popularity). Features reveal the clusters imperfectly: an item's genres always
// include its cluster's genre; a user's `segment` is the primary cluster with probability
// 0.7, and `interests` list the primary / secondary genres with probability 0.8 / 0.5 plus
// noise. `region`, `brand` and `age` are noise; `price` is noise too. A model that learns
// the clusters beats popularity by far; cold users can only be served through features.
#ifndef TWOTOWER_DATASET_SYNTHETIC_H_
#define TWOTOWER_DATASET_SYNTHETIC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace twotower {

struct SyntheticOptions {
  int users = 2000;
  int items = 1000;
  int clusters = 8;
  int min_clicks = 20;
  int max_clicks = 60;
  double affinity = 4.0;
  // Users whose whole history goes to test_cold.csv (never seen in training).
  double cold_user_fraction = 0.1;
  // Last fraction (by timestamp) of each warm user's clicks goes to test_warm.csv.
  double test_fraction = 0.2;
  uint64_t seed = 1;
};

// Writes users.csv, items.csv, train.csv, test_warm.csv and test_cold.csv (CSV with a
// header row; configs/synthetic.textproto reads them) into `out_dir`, which must exist.
absl::Status WriteSyntheticDataset(const SyntheticOptions& options, const std::string& out_dir);

}  // namespace twotower

#endif  // TWOTOWER_DATASET_SYNTHETIC_H_
