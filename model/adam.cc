#include "model/adam.h"

#include <cmath>

namespace twotower {

namespace {
template <typename T>
std::vector<float> ZerosLike(const T& v) { return std::vector<float>(v.size(), 0.0f); }
}  // namespace

AdamOptimizer::AdamOptimizer(const Tower& tower, const AdamOptions& options)
    : options_(options) {
  for (const EmbeddingTable& e : tower.embeddings()) {
    embeddings_.push_back({ZerosLike(e.weights), ZerosLike(e.weights)});
  }
  for (const DenseLayer& d : tower.layers()) {
    weights_.push_back({ZerosLike(d.weights), ZerosLike(d.weights)});
    bias_.push_back({ZerosLike(d.bias), ZerosLike(d.bias)});
  }
}

void AdamOptimizer::Update(float* w, const float* g, Moments& state, size_t offset,
                           size_t count) {
  const float b1 = options_.beta1, b2 = options_.beta2;
  const float decay = 1.0f - options_.learning_rate * options_.weight_decay;
  float* m = state.m.data() + offset;
  float* v = state.v.data() + offset;
  for (size_t i = 0; i < count; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    w[i] = w[i] * decay - lr_t_ * m[i] / (std::sqrt(v[i]) + options_.epsilon);
  }
}

void AdamOptimizer::Step(const TowerGradients& grads, Tower* tower) {
  ++step_;
  lr_t_ = options_.learning_rate *
          static_cast<float>(std::sqrt(1 - std::pow(options_.beta2, step_)) /
                             (1 - std::pow(options_.beta1, step_)));
  for (size_t f = 0; f < grads.embeddings.size(); ++f) {
    const SparseRowGradients& g = grads.embeddings[f];
    EmbeddingTable& table = tower->embeddings()[f];
    for (size_t s = 0; s < g.rows.size(); ++s) {
      const size_t offset = static_cast<size_t>(g.rows[s]) * table.dim;
      Update(table.weights.data() + offset, g.values.data() + s * table.dim, embeddings_[f],
             offset, table.dim);
    }
  }
  for (size_t l = 0; l < grads.weights.size(); ++l) {
    DenseLayer& layer = tower->layers()[l];
    Update(layer.weights.data(), grads.weights[l].data(), weights_[l], 0, layer.weights.size());
    Update(layer.bias.data(), grads.bias[l].data(), bias_[l], 0, layer.bias.size());
  }
}

}  // namespace twotower
