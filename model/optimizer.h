// Optimizers for a tower. Embedding rows are updated sparsely: a step costs what the batch
// touched, not the size of the tables ("lazy" Adam / Adagrad; rows not in the batch keep
// their state untouched). Step() may be called from several threads at once on the same
// tower (Hogwild): updates are lock-free and may interleave.
#ifndef TWOTOWER_MODEL_OPTIMIZER_H_
#define TWOTOWER_MODEL_OPTIMIZER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/tower.h"

namespace twotower {

struct OptimizerOptions {
  enum class Kind { kAdam, kAdagrad, kSgd };
  Kind kind = Kind::kAdam;
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;     // Adam
  float beta2 = 0.999f;   // Adam
  float epsilon = 1e-8f;  // Adam, Adagrad
  // Decoupled (AdamW-style) decay of the parameters a step updates.
  float weight_decay = 0.0f;
};

class Optimizer {
 public:
  // State (moments / accumulators) sized for `tower`.
  Optimizer(const Tower& tower, const OptimizerOptions& options);
  // Applies `grads` to `tower` (the tower this optimizer was made for), at
  // learning_rate * lr_scale (a schedule's factor).
  void Step(const TowerGradients& grads, Tower* tower, float lr_scale = 1.0f);

 private:
  struct State {
    std::vector<float> first, second;  // Adam: m, v. Adagrad: -, sum of g^2. SGD: none.
  };
  void Update(float* w, const float* g, State& state, size_t offset, size_t count, float lr) const;

  OptimizerOptions options_;
  std::atomic<int64_t> steps_{0};
  std::vector<State> embeddings_;
  std::vector<State> weights_;
  std::vector<State> bias_;
};

}  // namespace twotower

#endif  // TWOTOWER_MODEL_OPTIMIZER_H_
