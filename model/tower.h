// One tower: embedding fields (id, categorical, pooled multi-hot / history) and numeric inputs
// -> concat -> MLP (ReLU hidden layers) -> L2-normalised vector. Forward and backward are
// written once here; the trainer uses both, the server uses Forward.
#ifndef TWOTOWER_MODEL_TOWER_H_
#define TWOTOWER_MODEL_TOWER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "features/encoded_table.h"
#include "features/feature_encoder.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

struct TowerShape {
  struct Field {
    int32_t rows = 0;  // vocabulary size including the OOV row (+ parameter_rows())
    int dim = 0;
    bool sum_pooling = false;  // several rows: their sum (default: their mean)
    // Attention pooling (FeatureSpec.pooling POOLING_ATTENTION, a KIND_HISTORY field whose
    // rows are in time order, most recent last): `heads` pooled vectors, concatenated
    // (input width heads x dim). Head h gives item j (at position p from the most recent,
    // 0 = the last, clipped to positions - 1) the score
    //   s_hj = theta_h[p] + q_h . e_j        (the items' embeddings are keys and values)
    // and pools sum_j softmax_j(s_hj) e_j. theta and q are learned; both start at 0, so
    // every head starts as the mean. They are kept in the field's table after its
    // vocabulary rows, so that they are saved, loaded and updated with it: `heads` rows of
    // queries q_h, then per head ceil(positions / dim) rows holding theta_h. 0 = no
    // attention (mean or sum pooling).
    int heads = 0;
    int positions = 0;
    int32_t parameter_rows() const { return heads == 0 ? 0 : heads * (1 + (positions + dim - 1) / dim); }
    int32_t vocabulary_rows() const { return rows - parameter_rows(); }
    int input_dim() const { return dim * (heads > 0 ? heads : 1); }
  };
  std::vector<Field> fields;  // field 0 = id
  int num_numeric = 0;
  std::vector<int> hidden_dims;
  int output_dim = 0;

  int input_dim() const;
  // Widths of the layer inputs/outputs: input, hidden..., output.
  std::vector<int> layer_dims() const;
  absl::Status Validate() const;
};

// Positions an attention-pooled KIND_HISTORY field tells apart when its history_length is 0
// (all): items further back share the last position's weight.
inline constexpr int kAttentionPositions = 64;

// Asks OpenBLAS (when it is the BLAS in use) for one thread per call: our matrices are
// small, and its worker threads only spin against the caller's own threads.
void UseSingleThreadedBlas();

// The shape a tower spec gives with the vocabularies of a fitted encoder.
TowerShape ShapeFor(const v1::TowerSpec& spec, const FeatureEncoder& encoder);

// rows x dim floats, row-major, read by Forward through values() wherever they are:
// owned in `weights` (the trainer's tables, which it updates), or, when `mapped` is not
// empty, read-only in a memory mapping that `mapping` keeps alive (a loaded bundle's
// tables: bundle/bundle.h, embedding_tables.f32), so a server's big id tables take no heap.
struct EmbeddingTable {
  int32_t rows = 0;
  int dim = 0;
  std::vector<float> weights;  // rows x dim (empty when mapped)
  std::span<const float> mapped = {};
  std::shared_ptr<const void> mapping = nullptr;

  std::span<const float> values() const { return mapped.empty() ? std::span<const float>(weights) : mapped; }
  // Owned tables only: a mapped table is read-only (its `weights` are empty).
  float* Row(int32_t r) { return weights.data() + static_cast<size_t>(r) * dim; }
  const float* Row(int32_t r) const { return values().data() + static_cast<size_t>(r) * dim; }
};

struct DenseLayer {
  int in = 0;
  int out = 0;
  std::vector<float> weights;  // out x in, row-major
  std::vector<float> bias;     // out
};

// What Forward keeps for Backward. Reused across batches to avoid reallocation.
struct TowerActivations {
  std::vector<std::vector<float>> layer_inputs;  // [l] = input of layer l (rows x in_l)
  std::vector<float> raw_output;                 // rows x output_dim, before normalising
  std::vector<float> norms;                      // rows
};

// Gradients of the touched embedding rows only (a batch touches few rows of big tables).
struct SparseRowGradients {
  int dim = 0;
  std::vector<int32_t> rows;                      // touched rows, first-touch order
  std::vector<float> values;                      // rows.size() x dim
  absl::flat_hash_map<int32_t, int32_t> slot;     // row -> index into rows
  float* Accumulator(int32_t row);                // zero-initialised on first touch
  void Clear();
};

struct TowerGradients {
  std::vector<SparseRowGradients> embeddings;  // per field
  std::vector<std::vector<float>> weights;     // per layer, out x in
  std::vector<std::vector<float>> bias;        // per layer
  void Clear();
};

class Tower {
 public:
  Tower() = default;
  // Random initialisation: embeddings N(0, 0.1^2), dense layers Glorot-uniform, bias 0;
  // attention pooling parameters 0 (each head starts as the mean).
  static absl::StatusOr<Tower> Create(const TowerShape& shape, uint64_t seed);
  // Takes ownership of trained parameters (checked against the shape).
  static absl::StatusOr<Tower> FromParameters(const TowerShape& shape,
                                              std::vector<EmbeddingTable> embeddings,
                                              std::vector<DenseLayer> layers);

  const TowerShape& shape() const { return shape_; }
  int output_dim() const { return shape_.output_dim; }

  // Writes the L2-normalised outputs (batch.size() x output_dim) to `out`. Every row
  // index in `batch` must be < the field's rows (checked by the callers' encoders).
  void Forward(const EncodedTable& batch, TowerActivations* acts, float* out) const;
  // Accumulates into `grads` the gradient of a loss whose gradient with respect to the
  // normalised outputs is `d_out` (rows x output_dim). `acts` comes from Forward on the
  // same batch.
  void Backward(const EncodedTable& batch, const TowerActivations& acts, const float* d_out,
                TowerGradients* grads) const;
  TowerGradients NewGradients() const;
  // Forward over all rows of `table` in chunks; returns table.size() x output_dim.
  std::vector<float> EmbedAll(const EncodedTable& table) const;

  std::vector<EmbeddingTable>& embeddings() { return embeddings_; }
  const std::vector<EmbeddingTable>& embeddings() const { return embeddings_; }
  std::vector<DenseLayer>& layers() { return layers_; }
  const std::vector<DenseLayer>& layers() const { return layers_; }

 private:
  TowerShape shape_;
  std::vector<EmbeddingTable> embeddings_;
  std::vector<DenseLayer> layers_;
};

}  // namespace twotower

#endif  // TWOTOWER_MODEL_TOWER_H_
