#include "model/losses.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace twotower {

float InBatchSoftmaxLoss(const float* users, const float* items, int batch, int dim,
                         std::span<const int32_t> item_keys, std::span<const float> log_q,
                         float temperature, float* d_users, float* d_items) {
  const size_t n = static_cast<size_t>(batch);
  // logits = U V^T / T.
  std::vector<float> logits(n * n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, batch, dim, 1.0f / temperature,
              users, dim, items, dim, 0.0f, logits.data(), batch);
  // Softmax per row, in place: logits become d loss / d logits (scaled by 1/batch).
  double loss = 0;
  const float inv_batch = 1.0f / static_cast<float>(batch);
  for (size_t i = 0; i < n; ++i) {
    float* row = logits.data() + i * n;
    float max_logit = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < n; ++j) {
      const bool accidental_hit = j != i && !item_keys.empty() && item_keys[j] == item_keys[i];
      if (accidental_hit) {
        row[j] = -std::numeric_limits<float>::infinity();
        continue;
      }
      if (!log_q.empty()) row[j] -= log_q[j];
      max_logit = std::max(max_logit, row[j]);
    }
    double sum = 0;
    for (size_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(row[j] - max_logit));
    const double log_sum = std::log(sum) + max_logit;
    loss += log_sum - row[i];
    for (size_t j = 0; j < n; ++j) {
      const float p = static_cast<float>(std::exp(row[j] - log_sum));
      row[j] = (p - (j == i ? 1.0f : 0.0f)) * inv_batch;
    }
  }
  // d users = G V / T ; d items = G^T U / T.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, dim, batch, 1.0f / temperature,
              logits.data(), batch, items, dim, 0.0f, d_users, dim);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, batch, dim, batch, 1.0f / temperature,
              logits.data(), batch, users, dim, 0.0f, d_items, dim);
  return static_cast<float>(loss / batch);
}

}  // namespace twotower
