#include "model/optimizer.h"

#include <cmath>

namespace twotower {

Optimizer::Optimizer(const Tower& tower, const OptimizerOptions& options) : options_(options) {
  const auto state_for = [&](size_t n) {
    State s;
    if (options_.kind == OptimizerOptions::Kind::kAdam) s.first.assign(n, 0.0f);
    if (options_.kind != OptimizerOptions::Kind::kSgd) s.second.assign(n, 0.0f);
    return s;
  };
  for (const EmbeddingTable& e : tower.embeddings()) embeddings_.push_back(state_for(e.weights.size()));
  for (const DenseLayer& d : tower.layers()) {
    weights_.push_back(state_for(d.weights.size()));
    bias_.push_back(state_for(d.bias.size()));
  }
}

void Optimizer::Update(float* w, const float* g, State& state, size_t offset, size_t count,
                       float lr) const {
  const float decay = 1.0f - options_.learning_rate * options_.weight_decay;
  switch (options_.kind) {
    case OptimizerOptions::Kind::kAdam: {
      const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.epsilon;
      float* m = state.first.data() + offset;
      float* v = state.second.data() + offset;
      for (size_t i = 0; i < count; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        w[i] = w[i] * decay - lr * m[i] / (std::sqrt(v[i]) + eps);
      }
      break;
    }
    case OptimizerOptions::Kind::kAdagrad: {
      float* sum_sq = state.second.data() + offset;
      for (size_t i = 0; i < count; ++i) {
        sum_sq[i] += g[i] * g[i];
        w[i] = w[i] * decay - lr * g[i] / (std::sqrt(sum_sq[i]) + options_.epsilon);
      }
      break;
    }
    case OptimizerOptions::Kind::kSgd:
      for (size_t i = 0; i < count; ++i) w[i] = w[i] * decay - lr * g[i];
      break;
  }
}

void Optimizer::Step(const TowerGradients& grads, Tower* tower, float lr_scale) {
  const int64_t step = steps_.fetch_add(1, std::memory_order_relaxed) + 1;
  float lr = options_.learning_rate * lr_scale;
  if (options_.kind == OptimizerOptions::Kind::kAdam) {  // bias correction
    lr *= static_cast<float>(std::sqrt(1 - std::pow(options_.beta2, step)) /
                             (1 - std::pow(options_.beta1, step)));
  }
  for (size_t f = 0; f < grads.embeddings.size(); ++f) {
    const SparseRowGradients& g = grads.embeddings[f];
    EmbeddingTable& table = tower->embeddings()[f];
    for (size_t s = 0; s < g.rows.size(); ++s) {
      const size_t offset = static_cast<size_t>(g.rows[s]) * table.dim;
      Update(table.weights.data() + offset, g.values.data() + s * table.dim, embeddings_[f],
             offset, table.dim, lr);
    }
  }
  for (size_t l = 0; l < grads.weights.size(); ++l) {
    DenseLayer& layer = tower->layers()[l];
    Update(layer.weights.data(), grads.weights[l].data(), weights_[l], 0, layer.weights.size(), lr);
    Update(layer.bias.data(), grads.bias[l].data(), bias_[l], 0, layer.bias.size(), lr);
  }
}

}  // namespace twotower
