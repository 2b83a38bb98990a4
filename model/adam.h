// Adam with lazy (sparse) updates for embedding rows: a step costs what the batch touched,
// not the size of the tables. Decoupled weight decay (AdamW) on the updated parameters.
#ifndef TWOTOWER_MODEL_ADAM_H_
#define TWOTOWER_MODEL_ADAM_H_

#include <cstdint>
#include <vector>

#include "model/tower.h"

namespace twotower {

struct AdamOptions {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  float weight_decay = 0.0f;
};

class AdamOptimizer {
 public:
  AdamOptimizer(const Tower& tower, const AdamOptions& options);
  // Applies one step of `grads` to `tower` (the tower this optimizer was made for).
  void Step(const TowerGradients& grads, Tower* tower);

 private:
  struct Moments {
    std::vector<float> m, v;
  };
  void Update(float* w, const float* g, Moments& state, size_t offset, size_t count);

  AdamOptions options_;
  int64_t step_ = 0;
  float lr_t_ = 0;  // bias-corrected learning rate of the current step
  std::vector<Moments> embeddings_;
  std::vector<Moments> weights_;
  std::vector<Moments> bias_;
};

}  // namespace twotower

#endif  // TWOTOWER_MODEL_ADAM_H_
