#include "model/losses.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace twotower {

namespace {

float Dot(const float* a, const float* b, int dim) {
  float sum = 0;
  for (int k = 0; k < dim; ++k) sum += a[k] * b[k];
  return sum;
}

// dst += scale * src
void Axpy(float scale, const float* src, float* dst, int dim) {
  for (int k = 0; k < dim; ++k) dst[k] += scale * src[k];
}

// Numerically stable log(1 + exp(x)) and its derivative sigmoid(x).
double Softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double Sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

void ZeroGradients(const ScoredExamples& in, const ExampleGradients& grad) {
  const size_t rows = static_cast<size_t>(in.batch) * in.dim;
  std::fill(grad.users, grad.users + rows, 0.0f);
  std::fill(grad.positives, grad.positives + rows, 0.0f);
  if (in.num_negatives > 0) {
    std::fill(grad.negatives, grad.negatives + rows * in.num_negatives, 0.0f);
  }
}

// The pairwise losses share their shape: loss(d) with d = cos(u, n) - cos(u, p).
template <typename Loss>
float PairwiseLoss(const ScoredExamples& in, const ExampleGradients& grad, Loss loss) {
  ZeroGradients(in, grad);
  const int d = in.dim, n = in.num_negatives;
  const float norm = 1.0f / static_cast<float>(std::max(1, in.batch * n));
  double total = 0;
  for (int b = 0; b < in.batch; ++b) {
    const float* u = in.users + static_cast<size_t>(b) * d;
    const float* p = in.positives + static_cast<size_t>(b) * d;
    const float pos = Dot(u, p, d);
    for (int j = 0; j < n; ++j) {
      const size_t row = static_cast<size_t>(b) * n + j;
      const float* neg = in.negatives + row * d;
      const auto [value, slope] = loss(Dot(u, neg, d) - pos);
      total += value;
      if (slope == 0) continue;
      const float g = static_cast<float>(slope) * norm;
      // d/du = g (n - p); d/dn = g u; d/dp = -g u.
      Axpy(g, neg, grad.users + static_cast<size_t>(b) * d, d);
      Axpy(-g, p, grad.users + static_cast<size_t>(b) * d, d);
      Axpy(g, u, grad.negatives + row * d, d);
      Axpy(-g, u, grad.positives + static_cast<size_t>(b) * d, d);
    }
  }
  return static_cast<float>(total * norm);
}

}  // namespace

float PointwiseLogisticLoss(const ScoredExamples& in, float scale, const ExampleGradients& grad) {
  ZeroGradients(in, grad);
  const int d = in.dim, n = in.num_negatives;
  const float norm = 1.0f / static_cast<float>(in.batch * (1 + n));
  double total = 0;
  for (int b = 0; b < in.batch; ++b) {
    const float* u = in.users + static_cast<size_t>(b) * d;
    const float* p = in.positives + static_cast<size_t>(b) * d;
    float* du = grad.users + static_cast<size_t>(b) * d;
    // Positive: softplus(-s c); d/dc = -s sigmoid(-s c).
    const double pos = Dot(u, p, d);
    total += Softplus(-scale * pos);
    const float gp = static_cast<float>(-scale * Sigmoid(-scale * pos)) * norm;
    Axpy(gp, p, du, d);
    Axpy(gp, u, grad.positives + static_cast<size_t>(b) * d, d);
    // Negatives: softplus(s c); d/dc = s sigmoid(s c).
    for (int j = 0; j < n; ++j) {
      const size_t row = static_cast<size_t>(b) * n + j;
      const float* neg = in.negatives + row * d;
      const double c = Dot(u, neg, d);
      total += Softplus(scale * c);
      const float gn = static_cast<float>(scale * Sigmoid(scale * c)) * norm;
      Axpy(gn, neg, du, d);
      Axpy(gn, u, grad.negatives + row * d, d);
    }
  }
  return static_cast<float>(total * norm);
}

float TripletHingeLoss(const ScoredExamples& in, float margin, const ExampleGradients& grad) {
  return PairwiseLoss(in, grad, [margin](float diff) {
    const float value = diff + margin;
    return value > 0 ? std::pair<double, double>{value, 1.0} : std::pair<double, double>{0.0, 0.0};
  });
}

float TripletLogisticLoss(const ScoredExamples& in, float scale, const ExampleGradients& grad) {
  return PairwiseLoss(in, grad, [scale](float diff) {
    return std::pair<double, double>{Softplus(scale * diff), scale * Sigmoid(scale * diff)};
  });
}

float SampledSoftmaxLoss(const ScoredExamples& in, float temperature,
                         std::span<const int32_t> positive_keys,
                         std::span<const int32_t> negative_keys,
                         std::span<const float> log_q_positives,
                         std::span<const float> log_q_negatives, const ExampleGradients& grad,
                         std::span<const float> row_weight) {
  ZeroGradients(in, grad);
  const int d = in.dim, n = in.num_negatives;
  const float inv_t = 1.0f / temperature;
  const float norm = 1.0f / static_cast<float>(in.batch);
  const bool correct = !log_q_positives.empty();
  std::vector<double> logits(1 + n);
  std::vector<bool> masked(1 + n);
  double total = 0;
  for (int b = 0; b < in.batch; ++b) {
    const float* u = in.users + static_cast<size_t>(b) * d;
    const float* p = in.positives + static_cast<size_t>(b) * d;
    logits[0] = Dot(u, p, d) * inv_t - (correct ? log_q_positives[b] : 0.0f);
    double max_logit = logits[0];
    for (int j = 0; j < n; ++j) {
      const size_t row = static_cast<size_t>(b) * n + j;
      masked[1 + j] = !positive_keys.empty() && negative_keys[row] == positive_keys[b];
      logits[1 + j] = Dot(u, in.negatives + row * d, d) * inv_t - (correct ? log_q_negatives[row] : 0.0f);
      if (!masked[1 + j]) max_logit = std::max(max_logit, logits[1 + j]);
    }
    double sum = std::exp(logits[0] - max_logit);
    for (int j = 1; j <= n; ++j) {
      if (!masked[j]) sum += std::exp(logits[j] - max_logit);
    }
    const double log_sum = max_logit + std::log(sum);
    const float weight = row_weight.empty() ? 1.0f : row_weight[b];
    total += weight * (log_sum - logits[0]);
    // d loss / d logit_j = softmax_j - [j == 0]; d logit / d cos = 1 / T.
    float* du = grad.users + static_cast<size_t>(b) * d;
    const float row_norm = norm * weight;
    const float g0 = static_cast<float>((std::exp(logits[0] - log_sum) - 1.0) * inv_t) * row_norm;
    Axpy(g0, p, du, d);
    Axpy(g0, u, grad.positives + static_cast<size_t>(b) * d, d);
    for (int j = 0; j < n; ++j) {
      if (masked[1 + j]) continue;
      const size_t row = static_cast<size_t>(b) * n + j;
      const float g = static_cast<float>(std::exp(logits[1 + j] - log_sum) * inv_t) * row_norm;
      Axpy(g, in.negatives + row * d, du, d);
      Axpy(g, u, grad.negatives + row * d, d);
    }
  }
  return static_cast<float>(total * norm);
}

float InBatchSoftmaxLoss(const float* users, const float* items, int batch, int columns,
                         int dim, std::span<const int32_t> item_keys,
                         std::span<const float> log_q, float temperature, float* d_users,
                         float* d_items, std::span<const uint8_t> masked,
                         std::span<const float> row_log_q_scale, std::span<const float> row_weight) {
  const size_t n = static_cast<size_t>(batch), m = static_cast<size_t>(columns);
  // logits = U V^T / T: batch x columns.
  std::vector<float> logits(n * m);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, columns, dim, 1.0f / temperature,
              users, dim, items, dim, 0.0f, logits.data(), columns);
  // Softmax per row, in place: logits become d loss / d logits (scaled by 1/batch).
  double loss = 0;
  const float inv_batch = 1.0f / static_cast<float>(batch);
  for (size_t i = 0; i < n; ++i) {
    float* row = logits.data() + i * m;
    const float q_scale = row_log_q_scale.empty() ? 1.0f : row_log_q_scale[i];
    float max_logit = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < m; ++j) {
      const bool accidental_hit = j != i && !item_keys.empty() && item_keys[j] == item_keys[i];
      if (accidental_hit || (j != i && !masked.empty() && masked[i * m + j] != 0)) {
        row[j] = -std::numeric_limits<float>::infinity();
        continue;
      }
      if (!log_q.empty()) row[j] -= q_scale * log_q[j];
      max_logit = std::max(max_logit, row[j]);
    }
    double sum = 0;
    for (size_t j = 0; j < m; ++j) sum += std::exp(static_cast<double>(row[j] - max_logit));
    const double log_sum = std::log(sum) + max_logit;
    const float weight = row_weight.empty() ? 1.0f : row_weight[i];
    loss += weight * (log_sum - row[i]);
    for (size_t j = 0; j < m; ++j) {
      const float p = static_cast<float>(std::exp(row[j] - log_sum));
      row[j] = (p - (j == i ? 1.0f : 0.0f)) * inv_batch * weight;
    }
  }
  // d users = G V / T ; d items = G^T U / T.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, dim, columns, 1.0f / temperature,
              logits.data(), columns, items, dim, 0.0f, d_users, dim);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, columns, dim, batch, 1.0f / temperature,
              logits.data(), columns, users, dim, 0.0f, d_items, dim);
  return static_cast<float>(loss / batch);
}

}  // namespace twotower
