// Training objectives on L2-normalised user / item vectors (so inner product = cosine).
// Each returns the mean loss and writes (overwrites) its gradient with respect to every
// input vector. Vectors are gathered one row per use: users[b] is example b's user,
// positives[b] its positive item, negatives[b * n + j] its j-th own negative.
#ifndef TWOTOWER_MODEL_LOSSES_H_
#define TWOTOWER_MODEL_LOSSES_H_

#include <cstdint>
#include <span>

namespace twotower {

// Examples with one positive and `num_negatives` own negatives each.
struct ScoredExamples {
  int batch = 0;
  int dim = 0;
  int num_negatives = 0;
  const float* users = nullptr;      // batch x dim
  const float* positives = nullptr;  // batch x dim
  const float* negatives = nullptr;  // batch * num_negatives x dim
};

struct ExampleGradients {
  float* users = nullptr;
  float* positives = nullptr;
  float* negatives = nullptr;
};

// Pointwise: binary classification of every (user, item) pair, logistic loss on the scaled
// cosine: positives pushed to cos -> +1 (label 1), negatives to cos -> -1 (label 0).
// loss = mean over all 1 + n pairs of softplus(-scale * cos) for positives and
// softplus(scale * cos) for negatives.
float PointwiseLogisticLoss(const ScoredExamples& in, float scale, const ExampleGradients& grad);

// Pairwise triplet hinge: mean over (b, j) of max(0, cos(u, n_j) + margin - cos(u, p)).
float TripletHingeLoss(const ScoredExamples& in, float margin, const ExampleGradients& grad);

// Pairwise triplet logistic: mean over (b, j) of log(1 + exp(scale * (cos(u, n_j) - cos(u, p)))).
float TripletLogisticLoss(const ScoredExamples& in, float scale, const ExampleGradients& grad);

// Listwise with sampled negatives: softmax cross-entropy over [positive, own negatives]
// with logits cos / temperature - log_q (the sampling-bias correction; log_q_positives:
// batch values, log_q_negatives: batch * n values; both empty = no correction). A negative
// whose key equals the positive's key is the positive itself drawn again (an accidental
// hit) and is masked out. `row_weight` (batch, or empty = all 1) weights each example's
// loss (the loss is the weighted sum / batch).
float SampledSoftmaxLoss(const ScoredExamples& in, float temperature,
                         std::span<const int32_t> positive_keys,
                         std::span<const int32_t> negative_keys,
                         std::span<const float> log_q_positives,
                         std::span<const float> log_q_negatives, const ExampleGradients& grad,
                         std::span<const float> row_weight = {});

// Listwise with in-batch negatives: row i of `users` (batch x dim) is paired with column i
// of `items` (columns x dim, columns >= batch); every other column is a negative (the
// other examples' positives, then optionally extra shared negatives: "mixed negative
// sampling"). Logits are cos / temperature - log_q[j] (log_q empty = no correction;
// applied in training only, the served score is the plain cosine). Where
// item_keys[j] == item_keys[i] for j != i the column is row i's own positive again (an
// accidental hit) and is masked. `masked` (batch x columns, or empty) masks more cells,
// e.g. items the user was shown but did not click. `row_log_q_scale` (batch, or empty =
// all 1) scales the correction per row; `row_weight` (batch, or empty = all 1) weights
// each row's loss (the loss is the weighted sum over rows / batch).
// d_users: batch x dim, d_items: columns x dim.
float InBatchSoftmaxLoss(const float* users, const float* items, int batch, int columns,
                         int dim, std::span<const int32_t> item_keys,
                         std::span<const float> log_q, float temperature, float* d_users,
                         float* d_items, std::span<const uint8_t> masked = {},
                         std::span<const float> row_log_q_scale = {},
                         std::span<const float> row_weight = {});

}  // namespace twotower

#endif  // TWOTOWER_MODEL_LOSSES_H_
