// Training objectives on L2-normalised user / item vectors. Each returns the mean loss
// over the batch and writes its gradient with respect to the vectors.
#ifndef TWOTOWER_MODEL_LOSSES_H_
#define TWOTOWER_MODEL_LOSSES_H_

#include <cstdint>
#include <span>

namespace twotower {

// Listwise softmax cross-entropy with in-batch negatives: row i of `users` is paired with
// row i of `items` (its positive); every other row j of `items` is a negative. Logits are
// cos(u_i, v_j) / temperature - log_q[j] (log_q empty = no sampling-bias correction).
// Where item_keys[j] == item_keys[i] for j != i the item is the user's own positive
// appearing again (an "accidental hit") and is masked out of the softmax.
// users, items: batch x dim. d_users, d_items: batch x dim, overwritten.
float InBatchSoftmaxLoss(const float* users, const float* items, int batch, int dim,
                         std::span<const int32_t> item_keys, std::span<const float> log_q,
                         float temperature, float* d_users, float* d_items);

}  // namespace twotower

#endif  // TWOTOWER_MODEL_LOSSES_H_
