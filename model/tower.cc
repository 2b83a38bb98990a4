#include "model/tower.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "util/config_enums.h"
#include "util/random.h"
#include "util/status_macros.h"

// Weak: present with OpenBLAS, null with another BLAS.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace twotower {

void UseSingleThreadedBlas() {
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
}

int TowerShape::input_dim() const {
  int dim = num_numeric;
  for (const Field& f : fields) dim += f.input_dim();
  return dim;
}

namespace {

// Attention pooling of one row's `ids` in an attention field (see TowerShape::Field):
// writes the heads' pooled vectors to out[h * dim ..] and their weights to
// alpha[h * ids.size() + j].
void AttentionPool(const TowerShape::Field& field, const EmbeddingTable& table,
                   std::span<const int32_t> ids, float* out, std::vector<float>* alpha) {
  const int d = field.dim;
  const int n = static_cast<int>(ids.size());
  const int32_t vocabulary = field.vocabulary_rows();
  const int theta_rows = (field.positions + d - 1) / d;
  alpha->resize(static_cast<size_t>(field.heads) * n);
  for (int h = 0; h < field.heads; ++h) {
    const float* q = table.Row(vocabulary + h);
    const float* theta = table.Row(vocabulary + field.heads + h * theta_rows);
    float* a = alpha->data() + static_cast<size_t>(h) * n;
    float top = -INFINITY;
    for (int j = 0; j < n; ++j) {
      const float* e = table.Row(ids[j]);
      float score = theta[std::min(n - 1 - j, field.positions - 1)];
      for (int k = 0; k < d; ++k) score += q[k] * e[k];
      a[j] = score;
      top = std::max(top, score);
    }
    float sum = 0;
    for (int j = 0; j < n; ++j) sum += (a[j] = std::exp(a[j] - top));
    float* o = out + static_cast<size_t>(h) * d;
    std::fill(o, o + d, 0.0f);
    for (int j = 0; j < n; ++j) {
      a[j] /= sum;
      const float* e = table.Row(ids[j]);
      for (int k = 0; k < d; ++k) o[k] += a[j] * e[k];
    }
  }
}

// The gradient of attention pooling (AttentionPool's weights recomputed): with g_h the
// gradient for head h's pooled vector o_h, item j gets alpha_hj g_h through its value and
// ds_hj q_h through its key, where ds_hj = alpha_hj (g_h . e_j - g_h . o_h) is the gradient
// of its score; theta_h[p_j] gets ds_hj and q_h gets ds_hj e_j.
void AttentionBackward(const TowerShape::Field& field, const EmbeddingTable& table,
                       std::span<const int32_t> ids, const float* g, SparseRowGradients* grads,
                       std::vector<float>* alpha, std::vector<float>* pooled) {
  const int d = field.dim;
  const int n = static_cast<int>(ids.size());
  pooled->resize(static_cast<size_t>(field.heads) * d);
  AttentionPool(field, table, ids, pooled->data(), alpha);
  const int32_t vocabulary = field.vocabulary_rows();
  const int theta_rows = (field.positions + d - 1) / d;
  for (int h = 0; h < field.heads; ++h) {
    const float* gh = g + static_cast<size_t>(h) * d;
    const float* o = pooled->data() + static_cast<size_t>(h) * d;
    const float* a = alpha->data() + static_cast<size_t>(h) * n;
    const int32_t query_row = vocabulary + h;
    const float* q = table.Row(query_row);
    float g_dot_o = 0;
    for (int k = 0; k < d; ++k) g_dot_o += gh[k] * o[k];
    for (int j = 0; j < n; ++j) {
      const float* e = table.Row(ids[j]);
      float g_dot_e = 0;
      for (int k = 0; k < d; ++k) g_dot_e += gh[k] * e[k];
      const float ds = a[j] * (g_dot_e - g_dot_o);
      // (An Accumulator pointer does not outlive the next Accumulator call.)
      float* acc = grads->Accumulator(ids[j]);
      for (int k = 0; k < d; ++k) acc[k] += a[j] * gh[k] + ds * q[k];
      acc = grads->Accumulator(query_row);
      for (int k = 0; k < d; ++k) acc[k] += ds * e[k];
      const int p = std::min(n - 1 - j, field.positions - 1);
      grads->Accumulator(vocabulary + field.heads + h * theta_rows + p / d)[p % d] += ds;
    }
  }
}

}  // namespace

std::vector<int> TowerShape::layer_dims() const {
  std::vector<int> dims = {input_dim()};
  dims.insert(dims.end(), hidden_dims.begin(), hidden_dims.end());
  dims.push_back(output_dim);
  return dims;
}

absl::Status TowerShape::Validate() const {
  if (fields.empty()) return absl::InvalidArgumentError("tower has no id field");
  for (size_t f = 0; f < fields.size(); ++f) {
    if (fields[f].rows < 1 || fields[f].dim < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tower field ", f, ": rows and dim must be >= 1"));
    }
    if (fields[f].heads < 0 || (fields[f].heads > 0 && (fields[f].positions < 1 || fields[f].sum_pooling ||
                                                        fields[f].vocabulary_rows() < 1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tower field ", f, ": attention pooling needs positions >= 1, no sum pooling and rows for its parameters"));
    }
  }
  for (int h : hidden_dims) {
    if (h < 1) return absl::InvalidArgumentError("hidden layer widths must be >= 1");
  }
  if (output_dim < 1) return absl::InvalidArgumentError("output_dim must be >= 1");
  if (num_numeric < 0) return absl::InvalidArgumentError("num_numeric must be >= 0");
  return absl::OkStatus();
}

TowerShape ShapeFor(const v1::TowerSpec& spec, const FeatureEncoder& encoder) {
  TowerShape shape;
  shape.fields.push_back({encoder.FieldRows(0), spec.id_embedding_dim()});
  for (int f = 1; f < encoder.num_fields(); ++f) {
    const v1::FeatureSpec& spec = encoder.FieldSpec(f);
    TowerShape::Field field{encoder.FieldRows(f), spec.embedding_dim(), ResolvedPooling(spec) == v1::FeatureSpec::POOLING_SUM};
    if (ResolvedPooling(spec) == v1::FeatureSpec::POOLING_ATTENTION) {
      field.heads = std::max(1, spec.pooling_heads());
      field.positions = spec.history_length() > 0 ? spec.history_length() : kAttentionPositions;
      field.rows += field.parameter_rows();
    }
    shape.fields.push_back(field);
  }
  shape.num_numeric = encoder.num_numeric();
  shape.hidden_dims.assign(spec.hidden_dims().begin(), spec.hidden_dims().end());
  shape.output_dim = spec.output_dim();
  return shape;
}

float* SparseRowGradients::Accumulator(int32_t row) {
  const auto [it, inserted] = slot.try_emplace(row, static_cast<int32_t>(rows.size()));
  if (inserted) {
    rows.push_back(row);
    values.resize(values.size() + dim, 0.0f);
  }
  return values.data() + static_cast<size_t>(it->second) * dim;
}

void SparseRowGradients::Clear() {
  rows.clear();
  values.clear();
  slot.clear();
}

void TowerGradients::Clear() {
  for (SparseRowGradients& e : embeddings) e.Clear();
  for (std::vector<float>& w : weights) std::fill(w.begin(), w.end(), 0.0f);
  for (std::vector<float>& b : bias) std::fill(b.begin(), b.end(), 0.0f);
}

absl::StatusOr<Tower> Tower::Create(const TowerShape& shape, uint64_t seed) {
  RETURN_IF_ERROR(shape.Validate());
  Rng rng(seed);
  std::vector<EmbeddingTable> embeddings;
  for (const TowerShape::Field& f : shape.fields) {
    EmbeddingTable table{f.rows, f.dim, std::vector<float>(static_cast<size_t>(f.rows) * f.dim)};
    for (float& w : table.weights) w = static_cast<float>(0.1 * StandardNormal(rng));
    // Attention parameters start at 0: every head is the mean.
    std::fill(table.weights.begin() + static_cast<ptrdiff_t>(f.vocabulary_rows()) * f.dim, table.weights.end(), 0.0f);
    embeddings.push_back(std::move(table));
  }
  std::vector<DenseLayer> layers;
  const std::vector<int> dims = shape.layer_dims();
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    DenseLayer layer{dims[l], dims[l + 1],
                     std::vector<float>(static_cast<size_t>(dims[l]) * dims[l + 1]),
                     std::vector<float>(dims[l + 1], 0.0f)};
    const double limit = std::sqrt(6.0 / (dims[l] + dims[l + 1]));
    for (float& w : layer.weights) w = static_cast<float>((2 * UniformDouble(rng) - 1) * limit);
    layers.push_back(std::move(layer));
  }
  return FromParameters(shape, std::move(embeddings), std::move(layers));
}

absl::StatusOr<Tower> Tower::FromParameters(const TowerShape& shape,
                                            std::vector<EmbeddingTable> embeddings,
                                            std::vector<DenseLayer> layers) {
  RETURN_IF_ERROR(shape.Validate());
  if (embeddings.size() != shape.fields.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tower has ", embeddings.size(),
                                                   " embedding tables, shape needs ",
                                                   shape.fields.size()));
  }
  for (size_t f = 0; f < embeddings.size(); ++f) {
    const EmbeddingTable& e = embeddings[f];
    if (e.rows != shape.fields[f].rows || e.dim != shape.fields[f].dim ||
        e.values().size() != static_cast<size_t>(e.rows) * e.dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding table ", f, " does not match the tower shape"));
    }
  }
  const std::vector<int> dims = shape.layer_dims();
  if (layers.size() + 1 != dims.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tower has ", layers.size(),
                                                   " layers, shape needs ", dims.size() - 1));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const DenseLayer& d = layers[l];
    if (d.in != dims[l] || d.out != dims[l + 1] ||
        d.weights.size() != static_cast<size_t>(d.in) * d.out ||
        d.bias.size() != static_cast<size_t>(d.out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("dense layer ", l, " does not match the tower shape"));
    }
  }
  Tower tower;
  tower.shape_ = shape;
  tower.embeddings_ = std::move(embeddings);
  tower.layers_ = std::move(layers);
  return tower;
}

TowerGradients Tower::NewGradients() const {
  TowerGradients grads;
  for (const EmbeddingTable& e : embeddings_) {
    grads.embeddings.emplace_back();
    grads.embeddings.back().dim = e.dim;
  }
  for (const DenseLayer& d : layers_) {
    grads.weights.emplace_back(d.weights.size(), 0.0f);
    grads.bias.emplace_back(d.bias.size(), 0.0f);
  }
  return grads;
}

std::vector<float> Tower::EmbedAll(const EncodedTable& table) const {
  constexpr int kChunk = 1024;
  const int d = shape_.output_dim;
  std::vector<float> out(static_cast<size_t>(table.size()) * d);
  EncodedTable chunk(table.num_fields(), table.num_numeric());
  TowerActivations acts;
  for (int start = 0; start < table.size(); start += kChunk) {
    chunk.Clear();
    const int end = std::min(table.size(), start + kChunk);
    for (int r = start; r < end; ++r) chunk.AppendRowFrom(table, r);
    Forward(chunk, &acts, out.data() + static_cast<size_t>(start) * d);
  }
  return out;
}

void Tower::Forward(const EncodedTable& batch, TowerActivations* acts, float* out) const {
  const int n = batch.size();
  const int num_layers = static_cast<int>(layers_.size());
  acts->layer_inputs.resize(num_layers);

  // Input row = [mean embedding of each field..., numeric...].
  const int in_dim = shape_.input_dim();
  std::vector<float>& x = acts->layer_inputs[0];
  x.assign(static_cast<size_t>(n) * in_dim, 0.0f);
  std::vector<float> alpha;
  for (int b = 0; b < n; ++b) {
    float* row = x.data() + static_cast<size_t>(b) * in_dim;
    int offset = 0;
    for (size_t f = 0; f < embeddings_.size(); ++f) {
      const EmbeddingTable& table = embeddings_[f];
      const TowerShape::Field& field = shape_.fields[f];
      const std::span<const int32_t> ids = batch.Field(b, static_cast<int>(f));
      if (field.heads > 0) {
        AttentionPool(field, table, ids, row + offset, &alpha);
        offset += field.input_dim();
        continue;
      }
      const float scale = field.sum_pooling ? 1.0f : 1.0f / static_cast<float>(ids.size());
      for (const int32_t id : ids) {
        const float* e = table.Row(id);
        for (int k = 0; k < table.dim; ++k) row[offset + k] += scale * e[k];
      }
      offset += table.dim;
    }
    const std::span<const float> numeric = batch.Numeric(b);
    std::copy(numeric.begin(), numeric.end(), row + offset);
  }

  // MLP: z = h W^T + b; ReLU on hidden layers.
  for (int l = 0; l < num_layers; ++l) {
    const DenseLayer& layer = layers_[l];
    const bool last = l + 1 == num_layers;
    std::vector<float>& z = last ? acts->raw_output : acts->layer_inputs[l + 1];
    z.resize(static_cast<size_t>(n) * layer.out);
    for (int b = 0; b < n; ++b) {
      std::copy(layer.bias.begin(), layer.bias.end(), z.begin() + static_cast<size_t>(b) * layer.out);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, layer.out, layer.in, 1.0f,
                acts->layer_inputs[l].data(), layer.in, layer.weights.data(), layer.in, 1.0f,
                z.data(), layer.out);
    if (!last) {
      for (float& v : z) v = std::max(v, 0.0f);
    }
  }

  // L2 normalisation.
  const int d = shape_.output_dim;
  acts->norms.resize(n);
  for (int b = 0; b < n; ++b) {
    const float* z = acts->raw_output.data() + static_cast<size_t>(b) * d;
    double sq = 0;
    for (int k = 0; k < d; ++k) sq += static_cast<double>(z[k]) * z[k];
    const float norm = std::max(static_cast<float>(std::sqrt(sq)), 1e-12f);
    acts->norms[b] = norm;
    float* y = out + static_cast<size_t>(b) * d;
    for (int k = 0; k < d; ++k) y[k] = z[k] / norm;
  }
}

void Tower::Backward(const EncodedTable& batch, const TowerActivations& acts,
                     const float* d_out, TowerGradients* grads) const {
  const int n = batch.size();
  const int d = shape_.output_dim;
  const int num_layers = static_cast<int>(layers_.size());

  // Through the normalisation: dz = (dy - y (y . dy)) / |z|.
  std::vector<float> dz(static_cast<size_t>(n) * d);
  for (int b = 0; b < n; ++b) {
    const float* z = acts.raw_output.data() + static_cast<size_t>(b) * d;
    const float* dy = d_out + static_cast<size_t>(b) * d;
    const float inv = 1.0f / acts.norms[b];
    float y_dot_dy = 0;
    for (int k = 0; k < d; ++k) y_dot_dy += z[k] * inv * dy[k];
    float* g = dz.data() + static_cast<size_t>(b) * d;
    for (int k = 0; k < d; ++k) g[k] = (dy[k] - z[k] * inv * y_dot_dy) * inv;
  }

  std::vector<float> dh;
  for (int l = num_layers - 1; l >= 0; --l) {
    const DenseLayer& layer = layers_[l];
    const std::vector<float>& h = acts.layer_inputs[l];
    // dW += dz^T h ; db += sum_b dz ; dh = dz W.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, layer.out, layer.in, n, 1.0f,
                dz.data(), layer.out, h.data(), layer.in, 1.0f, grads->weights[l].data(),
                layer.in);
    std::vector<float>& db = grads->bias[l];
    for (int b = 0; b < n; ++b) {
      const float* g = dz.data() + static_cast<size_t>(b) * layer.out;
      for (int k = 0; k < layer.out; ++k) db[k] += g[k];
    }
    dh.assign(static_cast<size_t>(n) * layer.in, 0.0f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, layer.in, layer.out, 1.0f,
                dz.data(), layer.out, layer.weights.data(), layer.in, 0.0f, dh.data(),
                layer.in);
    if (l > 0) {  // through the ReLU that produced h
      for (size_t i = 0; i < dh.size(); ++i) {
        if (h[i] <= 0.0f) dh[i] = 0.0f;
      }
    }
    dz.swap(dh);
  }

  // dz now holds d loss / d input: scatter into the embedding rows (mean pooling).
  const int in_dim = shape_.input_dim();
  std::vector<float> alpha, pooled;
  for (int b = 0; b < n; ++b) {
    const float* g = dz.data() + static_cast<size_t>(b) * in_dim;
    int offset = 0;
    for (size_t f = 0; f < embeddings_.size(); ++f) {
      const int dim = embeddings_[f].dim;
      const TowerShape::Field& field = shape_.fields[f];
      const std::span<const int32_t> ids = batch.Field(b, static_cast<int>(f));
      if (field.heads > 0) {
        AttentionBackward(field, embeddings_[f], ids, g + offset, &grads->embeddings[f], &alpha, &pooled);
        offset += field.input_dim();
        continue;
      }
      const float scale = field.sum_pooling ? 1.0f : 1.0f / static_cast<float>(ids.size());
      for (const int32_t id : ids) {
        float* acc = grads->embeddings[f].Accumulator(id);
        for (int k = 0; k < dim; ++k) acc[k] += scale * g[offset + k];
      }
      offset += dim;
    }
  }
}

}  // namespace twotower
