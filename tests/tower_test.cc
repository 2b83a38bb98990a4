// Towers and losses: every gradient against central finite differences, losses against
// hand-computed values, and the lazy Adam update.
#include "model/tower.h"

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/optimizer.h"
#include "tests/status_matchers.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

// A tower with every kind of input: id, a categorical field, a mean-pooled and a
// sum-pooled multi-hot field with repeated and multiple rows, two numeric inputs, and two
// hidden layers.
TowerShape TestShape() {
  TowerShape shape;
  shape.fields = {{7, 3}, {4, 2}, {5, 3}, {6, 2, /*sum_pooling=*/true}};
  shape.num_numeric = 2;
  shape.hidden_dims = {6, 5};
  shape.output_dim = 4;
  return shape;
}

EncodedTable TestBatch() {
  EncodedTable batch(4, 2);
  batch.AppendRow({{1}, {2}, {0, 3, 4}, {1, 5}}, std::vector<float>{0.5f, -1.0f});
  batch.AppendRow({{0}, {2}, {1}, {2, 2, 3}}, std::vector<float>{-0.3f, 2.0f});
  batch.AppendRow({{6}, {3}, {4, 4}, {0}}, std::vector<float>{1.5f, 0.1f});
  return batch;
}

// A scalar function of the outputs: sum_bk w_bk * y_bk, computed in double.
struct Probe {
  std::vector<float> weights;
  double operator()(const std::vector<float>& out) const {
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += static_cast<double>(weights[i]) * out[i];
    return sum;
  }
};

double ProbeLoss(const Tower& tower, const EncodedTable& batch, const Probe& probe) {
  std::vector<float> out(static_cast<size_t>(batch.size()) * tower.output_dim());
  TowerActivations acts;
  tower.Forward(batch, &acts, out.data());
  return probe(out);
}

// Checks d(probe)/d(param) for every element of `param` against central differences.
void CheckParameter(Tower& tower, const EncodedTable& batch, const Probe& probe,
                    std::vector<float>& param, const std::function<float(size_t)>& analytic,
                    const std::string& name) {
  constexpr float kEps = 1e-3f;
  for (size_t i = 0; i < param.size(); ++i) {
    const float saved = param[i];
    param[i] = saved + kEps;
    const double plus = ProbeLoss(tower, batch, probe);
    param[i] = saved - kEps;
    const double minus = ProbeLoss(tower, batch, probe);
    param[i] = saved;
    const double numeric = (plus - minus) / (2 * kEps);
    const double expected = analytic(i);
    EXPECT_NEAR(expected, numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << name << "[" << i << "]";
  }
}

TEST(TowerTest, OutputsAreUnitVectors) {
  absl::StatusOr<Tower> tower = Tower::Create(TestShape(), 7);
  ASSERT_THAT(tower, IsOk());
  const EncodedTable batch = TestBatch();
  std::vector<float> out(3 * 4);
  TowerActivations acts;
  tower->Forward(batch, &acts, out.data());
  for (int b = 0; b < 3; ++b) {
    double sq = 0;
    for (int k = 0; k < 4; ++k) sq += out[b * 4 + k] * out[b * 4 + k];
    EXPECT_NEAR(sq, 1.0, 1e-5);
  }
}

TEST(TowerTest, EveryGradientMatchesFiniteDifferences) {
  absl::StatusOr<Tower> created = Tower::Create(TestShape(), 11);
  ASSERT_THAT(created, IsOk());
  Tower& tower = *created;
  // Bias away from zero so no ReLU input sits on its kink within +-eps.
  for (DenseLayer& layer : tower.layers()) {
    for (float& b : layer.bias) b = 0.05f;
  }
  const EncodedTable batch = TestBatch();
  Probe probe;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1, 1);
  for (int i = 0; i < 3 * 4; ++i) probe.weights.push_back(uniform(rng));

  std::vector<float> out(3 * 4);
  TowerActivations acts;
  tower.Forward(batch, &acts, out.data());
  TowerGradients grads = tower.NewGradients();
  tower.Backward(batch, acts, probe.weights.data(), &grads);

  for (size_t f = 0; f < tower.embeddings().size(); ++f) {
    EmbeddingTable& table = tower.embeddings()[f];
    SparseRowGradients& g = grads.embeddings[f];
    const auto analytic = [&](size_t i) -> float {
      const int32_t row = static_cast<int32_t>(i / table.dim);
      const auto it = g.slot.find(row);
      if (it == g.slot.end()) return 0.0f;  // untouched rows have no gradient
      return g.values[static_cast<size_t>(it->second) * table.dim + i % table.dim];
    };
    CheckParameter(tower, batch, probe, table.weights, analytic, "embedding " + std::to_string(f));
  }
  for (size_t l = 0; l < tower.layers().size(); ++l) {
    DenseLayer& layer = tower.layers()[l];
    CheckParameter(tower, batch, probe, layer.weights,
                   [&](size_t i) { return grads.weights[l][i]; }, "weights " + std::to_string(l));
    CheckParameter(tower, batch, probe, layer.bias,
                   [&](size_t i) { return grads.bias[l][i]; }, "bias " + std::to_string(l));
  }
  // Touched rows are exactly the rows the batch uses.
  EXPECT_EQ(grads.embeddings[0].rows.size(), 3u);  // ids 1, 0, 6
  EXPECT_EQ(grads.embeddings[2].rows.size(), 4u);  // rows 0, 3, 4, 1
  EXPECT_EQ(grads.embeddings[3].rows.size(), 5u);  // rows 1, 5, 2, 3, 0
}

// Rows {1, 2} of a multi-hot field give the same input as one row holding their mean
// (POOLING_MEAN) or their sum (POOLING_SUM).
TEST(TowerTest, MultiHotPooling) {
  for (const bool sum : {false, true}) {
    TowerShape shape;
    shape.fields = {{2, 1}, {3, 2, sum}};
    shape.output_dim = 2;
    absl::StatusOr<Tower> tower = Tower::Create(shape, 1);
    ASSERT_THAT(tower, IsOk());
    EncodedTable pooled(2, 0), single(2, 0);
    pooled.AppendRow({{0}, {1, 2}}, {});
    single.AppendRow({{0}, {0}}, {});
    EmbeddingTable& e = tower->embeddings()[1];
    for (int k = 0; k < 2; ++k) e.Row(0)[k] = (sum ? 1.0f : 0.5f) * (e.Row(1)[k] + e.Row(2)[k]);
    std::vector<float> a(2), b(2);
    TowerActivations acts;
    tower->Forward(pooled, &acts, a.data());
    tower->Forward(single, &acts, b.data());
    EXPECT_NEAR(a[0], b[0], 1e-6) << (sum ? "sum" : "mean");
    EXPECT_NEAR(a[1], b[1], 1e-6) << (sum ? "sum" : "mean");
  }
}

// Attention pooling (TowerShape::Field heads / positions): a field of 6 vocabulary rows,
// width 3, 2 heads telling 3 positions apart (4 parameter rows), in a tower with an id,
// a categorical field and a numeric input; histories of 1, 3 and 5 items (5 > 3
// positions: the oldest share the last position's weight), with a repeated item.
TowerShape AttentionShape() {
  TowerShape shape;
  shape.fields = {{5, 2}, {4, 2}, {6 + 4, 3, false, /*heads=*/2, /*positions=*/3}};
  shape.num_numeric = 1;
  shape.hidden_dims = {5};
  shape.output_dim = 3;
  return shape;
}

EncodedTable AttentionBatch() {
  EncodedTable batch(3, 1);
  batch.AppendRow({{1}, {2}, {3}}, std::vector<float>{0.5f});
  batch.AppendRow({{0}, {1}, {1, 4, 2}}, std::vector<float>{-1.0f});
  batch.AppendRow({{4}, {3}, {5, 1, 2, 2, 0}}, std::vector<float>{0.3f});
  return batch;
}

TEST(TowerTest, AttentionPoolingStartsAsTheMean) {
  TowerShape shape = AttentionShape();
  ASSERT_EQ(shape.fields[2].parameter_rows(), 4);
  ASSERT_EQ(shape.fields[2].vocabulary_rows(), 6);
  EXPECT_EQ(shape.input_dim(), 2 + 2 + 2 * 3 + 1);
  absl::StatusOr<Tower> tower = Tower::Create(shape, 5);
  ASSERT_THAT(tower, IsOk());
  const EmbeddingTable& table = tower->embeddings()[2];
  for (int32_t r = 6; r < 10; ++r) {
    for (int k = 0; k < 3; ++k) EXPECT_EQ(table.Row(r)[k], 0.0f) << r;
  }
  // The input block of each head is the mean of the history's rows.
  const EncodedTable batch = AttentionBatch();
  std::vector<float> out(3 * 3);
  TowerActivations acts;
  tower->Forward(batch, &acts, out.data());
  const std::vector<float>& x = acts.layer_inputs[0];
  for (int b = 0; b < 3; ++b) {
    const std::span<const int32_t> ids = batch.Field(b, 2);
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 3; ++k) {
        double mean = 0;
        for (const int32_t id : ids) mean += table.Row(id)[k] / ids.size();
        EXPECT_NEAR(x[b * 11 + 4 + h * 3 + k], mean, 1e-6) << b << " " << h << " " << k;
      }
    }
  }
  // Invalid attention shapes are refused.
  shape.fields[2].positions = 0;
  EXPECT_FALSE(Tower::Create(shape, 1).ok());
  shape = AttentionShape();
  shape.fields[2].sum_pooling = true;
  EXPECT_FALSE(Tower::Create(shape, 1).ok());
  shape = AttentionShape();
  shape.fields[2].rows = 4;  // no room for the parameters
  EXPECT_FALSE(Tower::Create(shape, 1).ok());
}

// Attention pooling's weights follow the position weights and the query: with theta
// favouring the most recent position by a lot, a head is (nearly) the last item.
TEST(TowerTest, AttentionPoolingWeighsByPositionAndContent) {
  TowerShape shape;
  shape.fields = {{1, 1}, {3 + 2, 2, false, 1, 2}};  // 3 rows, 1 head, 2 positions
  shape.output_dim = 3;
  absl::StatusOr<Tower> tower = Tower::Create(shape, 2);
  ASSERT_THAT(tower, IsOk());
  EmbeddingTable& table = tower->embeddings()[1];
  table.Row(1)[0] = 1;
  table.Row(1)[1] = 0;
  table.Row(2)[0] = 0;
  table.Row(2)[1] = 1;
  EncodedTable batch(2, 0);
  batch.AppendRow({{0}, {1, 2}}, {});  // 2 is the most recent
  TowerActivations acts;
  std::vector<float> out(3);
  const auto pooled = [&] {
    tower->Forward(batch, &acts, out.data());
    return std::pair{acts.layer_inputs[0][1], acts.layer_inputs[0][2]};
  };
  EXPECT_NEAR(pooled().first, 0.5, 1e-6);  // the mean
  table.Row(4)[0] = 20;  // theta[0]: the most recent position
  EXPECT_NEAR(pooled().second, 1.0, 1e-6);
  table.Row(4)[0] = 0;
  table.Row(3)[0] = std::log(3.0f);  // query . e_1 = log 3: weights 3/4, 1/4
  EXPECT_NEAR(pooled().first, 0.75, 1e-6);
  EXPECT_NEAR(pooled().second, 0.25, 1e-6);
}

TEST(TowerTest, AttentionGradientsMatchFiniteDifferences) {
  absl::StatusOr<Tower> created = Tower::Create(AttentionShape(), 13);
  ASSERT_THAT(created, IsOk());
  Tower& tower = *created;
  for (DenseLayer& layer : tower.layers()) {
    for (float& b : layer.bias) b = 0.05f;
  }
  // Non-zero queries and position weights, so that every path of the gradient counts.
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> uniform(-1, 1);
  EmbeddingTable& table = tower.embeddings()[2];
  for (int32_t r = 6; r < 10; ++r) {
    for (int k = 0; k < 3; ++k) table.Row(r)[k] = uniform(rng);
  }
  const EncodedTable batch = AttentionBatch();
  Probe probe;
  for (int i = 0; i < 3 * 3; ++i) probe.weights.push_back(uniform(rng));
  std::vector<float> out(3 * 3);
  TowerActivations acts;
  tower.Forward(batch, &acts, out.data());
  TowerGradients grads = tower.NewGradients();
  tower.Backward(batch, acts, probe.weights.data(), &grads);
  for (size_t f = 0; f < tower.embeddings().size(); ++f) {
    EmbeddingTable& e = tower.embeddings()[f];
    SparseRowGradients& g = grads.embeddings[f];
    const auto analytic = [&](size_t i) -> float {
      const auto it = g.slot.find(static_cast<int32_t>(i / e.dim));
      return it == g.slot.end() ? 0.0f : g.values[static_cast<size_t>(it->second) * e.dim + i % e.dim];
    };
    CheckParameter(tower, batch, probe, e.weights, analytic, "embedding " + std::to_string(f));
  }
  for (size_t l = 0; l < tower.layers().size(); ++l) {
    DenseLayer& layer = tower.layers()[l];
    CheckParameter(tower, batch, probe, layer.weights, [&](size_t i) { return grads.weights[l][i]; },
                   "weights " + std::to_string(l));
  }
  // The touched rows: the history's items (1..5 and 0, 3), both queries, and the rows of
  // theta (one per head here); theta's third position (p = 2) is used by the oldest items
  // of the 3- and 5-item histories only.
  EXPECT_EQ(grads.embeddings[2].rows.size(), 6u + 4u);
}

TEST(TowerTest, RejectsParametersThatDoNotMatchTheShape) {
  TowerShape shape = TestShape();
  absl::StatusOr<Tower> tower = Tower::Create(shape, 1);
  ASSERT_THAT(tower, IsOk());
  std::vector<EmbeddingTable> embeddings = tower->embeddings();
  embeddings[1].weights.pop_back();
  EXPECT_FALSE(Tower::FromParameters(shape, embeddings, tower->layers()).ok());
  shape.output_dim = 0;
  EXPECT_FALSE(Tower::Create(shape, 1).ok());
}

// --- Optimizers ------------------------------------------------------------------------------------

TEST(AdamTest, UpdatesOnlyTouchedEmbeddingRowsAndMovesAgainstTheGradient) {
  absl::StatusOr<Tower> tower = Tower::Create(TestShape(), 3);
  ASSERT_THAT(tower, IsOk());
  const Tower before = *tower;
  Optimizer adam(*tower, OptimizerOptions{.learning_rate = 0.01f});
  TowerGradients grads = tower->NewGradients();
  float* g = grads.embeddings[0].Accumulator(2);
  g[0] = 1.0f;
  g[1] = -1.0f;
  adam.Step(grads, &*tower);
  const EmbeddingTable& e0 = tower->embeddings()[0];
  const EmbeddingTable& e0_before = before.embeddings()[0];
  // First Adam step moves by lr * sign(g) (bias-corrected m / sqrt(v) = sign).
  EXPECT_NEAR(e0.Row(2)[0], e0_before.Row(2)[0] - 0.01f, 1e-5);
  EXPECT_NEAR(e0.Row(2)[1], e0_before.Row(2)[1] + 0.01f, 1e-5);
  EXPECT_FLOAT_EQ(e0.Row(2)[2], e0_before.Row(2)[2]);  // zero gradient, zero step
  for (int32_t r : {0, 1, 3, 4, 5, 6}) {
    for (int k = 0; k < e0.dim; ++k) EXPECT_EQ(e0.Row(r)[k], e0_before.Row(r)[k]) << r;
  }
}

TEST(OptimizerTest, AdagradAndSgdStepSizes) {
  for (const auto kind : {OptimizerOptions::Kind::kAdagrad, OptimizerOptions::Kind::kSgd}) {
    absl::StatusOr<Tower> tower = Tower::Create(TestShape(), 3);
    ASSERT_THAT(tower, IsOk());
    const float before = tower->embeddings()[1].Row(1)[0];
    const float untouched = tower->embeddings()[1].Row(2)[0];
    Optimizer opt(*tower, OptimizerOptions{.kind = kind, .learning_rate = 0.1f});
    TowerGradients grads = tower->NewGradients();
    grads.embeddings[1].Accumulator(1)[0] = 0.5f;
    opt.Step(grads, &*tower);
    // Adagrad's first step: lr * g / sqrt(g^2) = lr. SGD: lr * g.
    const float expected = kind == OptimizerOptions::Kind::kSgd ? 0.05f : 0.1f;
    EXPECT_NEAR(tower->embeddings()[1].Row(1)[0], before - expected, 1e-6);
    EXPECT_EQ(tower->embeddings()[1].Row(2)[0], untouched);
  }
}

TEST(OptimizerTest, LearningRateScaleScalesTheStep) {
  for (const float scale : {0.0f, 0.25f}) {
    absl::StatusOr<Tower> tower = Tower::Create(TestShape(), 3);
    ASSERT_THAT(tower, IsOk());
    const float before = tower->embeddings()[1].Row(1)[0];
    Optimizer sgd(*tower, OptimizerOptions{.kind = OptimizerOptions::Kind::kSgd, .learning_rate = 0.1f});
    TowerGradients grads = tower->NewGradients();
    grads.embeddings[1].Accumulator(1)[0] = 0.5f;
    sgd.Step(grads, &*tower, scale);
    EXPECT_NEAR(tower->embeddings()[1].Row(1)[0], before - 0.05f * scale, 1e-7) << scale;
  }
}

}  // namespace
}  // namespace twotower
