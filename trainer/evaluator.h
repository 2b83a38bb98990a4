// Offline evaluation exactly as the ML-100K protocol (docs/BENCHMARKS.md) defines it:
// rank the whole catalogue minus the user's training items; Recall@K = hits / |held-out items|;
// NDCG@10 with binary relevance; unweighted means over users in protocol order.
#ifndef TWOTOWER_TRAINER_EVALUATOR_H_
#define TWOTOWER_TRAINER_EVALUATOR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tower.h"
#include "trainer/training_data.h"

namespace twotower {

struct EvalResult {
  std::string name;
  int users = 0;
  std::vector<int> ks;
  std::vector<double> recall;  // per k
  double ndcg_at_10 = 0;
};

// Metrics of every eval set of `data`. When `recs` is not null, it gets one string per
// eval set holding the top `recs_depth` items of each of its users as
// "user<TAB>item<TAB>rank" lines (the input of the protocol's scorer, eval.py).
absl::StatusOr<std::vector<EvalResult>> Evaluate(const TrainingData& data,
                                                 const Tower& user_tower,
                                                 const std::vector<float>& item_vectors,
                                                 const std::vector<int>& ks, int recs_depth,
                                                 std::vector<std::string>* recs);

// The popularity baseline on the same protocol: every user gets the catalogue ranked by
// training frequency (what a model must beat).
absl::StatusOr<std::vector<EvalResult>> EvaluatePopularity(const TrainingData& data,
                                                           const std::vector<int>& ks);

// "warm  users 849  Recall@10 0.1018 ..." for logs.
std::string FormatEvalResult(const EvalResult& result);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_EVALUATOR_H_
