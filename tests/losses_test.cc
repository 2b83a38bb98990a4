// Every objective: hand-computed values, and gradients against central finite differences.
#include <cmath>
#include <functional>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "model/losses.h"

namespace twotower {
namespace {

std::vector<float> Normalised(std::vector<float> v, int dim) {
  for (size_t r = 0; r < v.size() / dim; ++r) {
    double sq = 0;
    for (int k = 0; k < dim; ++k) sq += v[r * dim + k] * v[r * dim + k];
    for (int k = 0; k < dim; ++k) v[r * dim + k] /= static_cast<float>(std::sqrt(sq));
  }
  return v;
}

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = uniform(rng);
  return v;
}

// Random examples plus their gradient buffers; Check() compares every analytic gradient
// element with central differences of `loss`.
struct Fixture {
  int batch, dim, negatives;
  std::vector<float> users, positives, negs, du, dp, dn;
  Fixture(int b, int d, int n, unsigned seed) : batch(b), dim(d), negatives(n) {
    std::mt19937 rng(seed);
    users = Random(b * d, rng);
    positives = Random(b * d, rng);
    negs = Random(b * n * d, rng);
    du.resize(users.size());
    dp.resize(positives.size());
    dn.resize(negs.size());
  }
  ScoredExamples In() const {
    return {batch, dim, negatives, users.data(), positives.data(), negs.data()};
  }
  ExampleGradients Grad() { return {du.data(), dp.data(), dn.data()}; }

  void Check(const std::function<float(const ScoredExamples&, const ExampleGradients&)>& loss) {
    loss(In(), Grad());
    const std::vector<float> gu = du, gp = dp, gn = dn;
    std::vector<float> su(du.size()), sp(dp.size()), sn(dn.size());
    const ExampleGradients scratch{su.data(), sp.data(), sn.data()};
    for (auto [values, grads, name] : {std::tuple{&users, &gu, "users"},
                                       std::tuple{&positives, &gp, "positives"},
                                       std::tuple{&negs, &gn, "negatives"}}) {
      for (size_t i = 0; i < values->size(); ++i) {
        const float saved = (*values)[i];
        (*values)[i] = saved + 1e-3f;
        const double plus = loss(In(), scratch);
        (*values)[i] = saved - 1e-3f;
        const double minus = loss(In(), scratch);
        (*values)[i] = saved;
        const double numeric = (plus - minus) / 2e-3;
        EXPECT_NEAR((*grads)[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << name << "[" << i << "]";
      }
    }
  }
};

// One user u = (1, 0); positive p = (0.6, 0.8) (cos 0.6); negatives (0, 1) (cos 0) and
// (0.8, -0.6) (cos 0.8).
struct HandExample {
  std::vector<float> u = {1, 0}, p = {0.6f, 0.8f}, n = {0, 1, 0.8f, -0.6f};
  std::vector<float> du = std::vector<float>(2), dp = std::vector<float>(2), dn = std::vector<float>(4);
  ScoredExamples In() const { return {1, 2, 2, u.data(), p.data(), n.data()}; }
  ExampleGradients Grad() { return {du.data(), dp.data(), dn.data()}; }
};

double Softplus(double x) { return std::log1p(std::exp(x)); }

TEST(PointwiseLossTest, HandComputedValue) {
  HandExample e;
  const float loss = PointwiseLogisticLoss(e.In(), 10.0f, e.Grad());
  EXPECT_NEAR(loss, (Softplus(-6.0) + Softplus(0.0) + Softplus(8.0)) / 3, 1e-5);
}

TEST(PointwiseLossTest, GradientsForOneToTwoAndOneToThree) {
  for (int negatives : {2, 3}) {
    Fixture f(3, 4, negatives, 10 + negatives);
    f.Check([](const ScoredExamples& in, const ExampleGradients& g) { return PointwiseLogisticLoss(in, 5.0f, g); });
  }
}

TEST(TripletHingeLossTest, HandComputedValueAndZeroBeyondTheMargin) {
  HandExample e;
  // max(0, 0 + 0.3 - 0.6) = 0 ; max(0, 0.8 + 0.3 - 0.6) = 0.5 ; mean 0.25.
  EXPECT_NEAR(TripletHingeLoss(e.In(), 0.3f, e.Grad()), 0.25, 1e-6);
  // Only the active triplet has a gradient: d/dn_1 = u / 2, d/dn_0 = 0.
  EXPECT_FLOAT_EQ(e.dn[0], 0.0f);
  EXPECT_FLOAT_EQ(e.dn[2], 0.5f);
}

TEST(TripletHingeLossTest, Gradients) {
  Fixture f(3, 4, 2, 21);
  f.Check([](const ScoredExamples& in, const ExampleGradients& g) { return TripletHingeLoss(in, 0.3f, g); });
}

TEST(TripletLogisticLossTest, HandComputedValue) {
  HandExample e;
  const double expected = (Softplus(5.0 * (0.0 - 0.6)) + Softplus(5.0 * (0.8 - 0.6))) / 2;
  EXPECT_NEAR(TripletLogisticLoss(e.In(), 5.0f, e.Grad()), expected, 1e-5);
}

TEST(TripletLogisticLossTest, Gradients) {
  Fixture f(3, 4, 2, 31);
  f.Check([](const ScoredExamples& in, const ExampleGradients& g) { return TripletLogisticLoss(in, 5.0f, g); });
}

TEST(SampledSoftmaxLossTest, HandComputedValueWithCorrectionAndMasking) {
  HandExample e;
  const float t = 0.5f;
  // Logits: 0.6/T, 0/T, 0.8/T.
  const double plain = std::log(std::exp(1.2) + std::exp(0.0) + std::exp(1.6)) - 1.2;
  EXPECT_NEAR(SampledSoftmaxLoss(e.In(), t, {}, {}, {}, {}, e.Grad()), plain, 1e-5);
  // logQ: subtract log q from every logit (the positive too).
  const std::vector<float> qp = {std::log(0.2f)}, qn = {std::log(0.5f), std::log(0.1f)};
  const double a = 1.2 - std::log(0.2), b = 0.0 - std::log(0.5), c = 1.6 - std::log(0.1);
  EXPECT_NEAR(SampledSoftmaxLoss(e.In(), t, {}, {}, qp, qn, e.Grad()),
              std::log(std::exp(a) + std::exp(b) + std::exp(c)) - a, 1e-5);
  // Negative 1 is the positive drawn again: masked.
  const std::vector<int32_t> pk = {7}, nk = {3, 7};
  EXPECT_NEAR(SampledSoftmaxLoss(e.In(), t, pk, nk, {}, {}, e.Grad()),
              std::log(std::exp(1.2) + std::exp(0.0)) - 1.2, 1e-5);
  EXPECT_FLOAT_EQ(e.dn[2], 0.0f);
  EXPECT_FLOAT_EQ(e.dn[3], 0.0f);
}

TEST(SampledSoftmaxLossTest, Gradients) {
  Fixture f(3, 4, 3, 41);
  const std::vector<int32_t> pk = {1, 2, 3}, nk = {5, 1, 6, 7, 8, 9, 3, 3, 4};
  const std::vector<float> qp = {-1, -2, -3}, qn = {-1, -1, -2, -2, -3, -3, -1, -2, -3};
  f.Check([&](const ScoredExamples& in, const ExampleGradients& g) {
    return SampledSoftmaxLoss(in, 0.3f, pk, nk, qp, qn, g);
  });
}

TEST(SampledSoftmaxLossTest, PerExampleWeightValueAndGradients) {
  // Weight 2.5 on the hand example (batch 1): the loss is 2.5 times the plain one.
  HandExample e;
  const double plain = std::log(std::exp(1.2) + std::exp(0.0) + std::exp(1.6)) - 1.2;
  const std::vector<float> weight = {2.5f};
  EXPECT_NEAR(SampledSoftmaxLoss(e.In(), 0.5f, {}, {}, {}, {}, e.Grad(), weight), 2.5 * plain, 1e-5);
  // Gradients with unequal weights (one of them 0) match finite differences.
  Fixture f(3, 4, 3, 43);
  const std::vector<int32_t> pk = {1, 2, 3}, nk = {5, 1, 6, 7, 8, 9, 3, 3, 4};
  const std::vector<float> qp = {-1, -2, -3}, qn = {-1, -1, -2, -2, -3, -3, -1, -2, -3};
  const std::vector<float> weights = {0.5f, 0.0f, 3.0f};
  f.Check([&](const ScoredExamples& in, const ExampleGradients& g) {
    return SampledSoftmaxLoss(in, 0.3f, pk, nk, qp, qn, g, weights);
  });
}


TEST(InBatchSoftmaxTest, HandComputedValue) {
  // Two users, two items, dim 2: u0 = i0 = (1,0), u1 = i1 = (0,1). cos = identity matrix.
  const std::vector<float> users = {1, 0, 0, 1}, items = {1, 0, 0, 1};
  std::vector<float> du(4), di(4);
  const float t = 0.5f;
  const float loss = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, t, du.data(), di.data());
  // Each row: -log(e^{1/t} / (e^{1/t} + e^0)) = log(1 + e^{-2}).
  EXPECT_NEAR(loss, std::log1p(std::exp(-2.0)), 1e-6);
}

TEST(InBatchSoftmaxTest, LogQCorrectionSubtractsLogFrequency) {
  // With log_q = log p, a popular negative's logit goes down: the loss must fall when
  // the negative is popular (p large) and rise when the positive is popular.
  const std::vector<float> users = {1, 0, 0, 1}, items = {0.6f, 0.8f, 0, 1};
  std::vector<float> du(4), di(4);
  const float plain = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f, du.data(), di.data());
  const std::vector<float> log_q = {std::log(0.5f), std::log(0.5f)};
  const float uniform = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, log_q, 1.0f, du.data(), di.data());
  EXPECT_NEAR(plain, uniform, 1e-6);  // equal q shifts every logit equally
  // Row 0: positive item 0, negative item 1. Make item 1 popular.
  const std::vector<float> popular_negative = {std::log(0.1f), std::log(0.9f)};
  // Hand value, row 0: logits s00 - log .1, s01 - log .9 ; row 1: s10 - log .1, s11 - log .9.
  const double s00 = 0.6, s01 = 0.0, s10 = 0.8, s11 = 1.0;
  const double a0 = s00 - std::log(0.1), b0 = s01 - std::log(0.9);
  const double a1 = s10 - std::log(0.1), b1 = s11 - std::log(0.9);
  const double row0 = -(a0 - std::log(std::exp(a0) + std::exp(b0)));
  const double row1 = -(b1 - std::log(std::exp(a1) + std::exp(b1)));
  const float got = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, popular_negative, 1.0f, du.data(), di.data());
  EXPECT_NEAR(got, (row0 + row1) / 2, 1e-5);
}

TEST(InBatchSoftmaxTest, PerRowLogQScale) {
  // Row 1's correction is doubled: its loss equals the plain loss with log_q x 2, row 0's
  // the plain loss with log_q x 1.
  const std::vector<float> users = {1, 0, 0, 1}, items = {0.6f, 0.8f, 0, 1};
  const std::vector<float> log_q = {std::log(0.2f), std::log(0.8f)};
  std::vector<float> du(4), di(4);
  const double s00 = 0.6, s01 = 0.0, s10 = 0.8, s11 = 1.0;
  const double row0 = std::log(std::exp(s00 - log_q[0]) + std::exp(s01 - log_q[1])) - (s00 - log_q[0]);
  const double row1 = std::log(std::exp(s10 - 2 * log_q[0]) + std::exp(s11 - 2 * log_q[1])) - (s11 - 2 * log_q[1]);
  const std::vector<float> scale = {1.0f, 2.0f};
  const float got = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, log_q, 1.0f,
                                       du.data(), di.data(), {}, scale);
  EXPECT_NEAR(got, (row0 + row1) / 2, 1e-5);
}

TEST(InBatchSoftmaxTest, PerRowWeight) {
  // Row weights 0.5 and 3: the loss is (0.5 row0 + 3 row1) / 2, and the gradients are
  // the weighted sum of each row's alone (computed by zeroing the other row's weight).
  const std::vector<float> users = {1, 0, 0, 1}, items = {0.6f, 0.8f, 0, 1};
  std::vector<float> du(4), di(4);
  const double s00 = 0.6, s01 = 0.0, s10 = 0.8, s11 = 1.0;
  const double row0 = std::log(std::exp(s00) + std::exp(s01)) - s00;
  const double row1 = std::log(std::exp(s10) + std::exp(s11)) - s11;
  const std::vector<float> weight = {0.5f, 3.0f};
  const float got = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f,
                                       du.data(), di.data(), {}, {}, weight);
  EXPECT_NEAR(got, (0.5 * row0 + 3 * row1) / 2, 1e-5);
  std::vector<float> du0(4), di0(4), du1(4), di1(4);
  const std::vector<float> only0 = {1, 0}, only1 = {0, 1};
  InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f, du0.data(), di0.data(), {}, {}, only0);
  InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f, du1.data(), di1.data(), {}, {}, only1);
  for (int k = 0; k < 4; ++k) {
    EXPECT_NEAR(du[k], 0.5f * du0[k] + 3 * du1[k], 1e-6) << k;
    EXPECT_NEAR(di[k], 0.5f * di0[k] + 3 * di1[k], 1e-6) << k;
  }
}

TEST(InBatchSoftmaxTest, ExtraMaskRemovesACell) {
  // Masking cell (0, 1) (e.g. an item user 0 was shown and skipped) gives row 0 the loss
  // of a softmax without column 1, and column 1 no gradient from row 0.
  const std::vector<float> users = {1, 0, 0, 1}, items = {0.6f, 0.8f, 0, 1};
  const std::vector<uint8_t> mask = {0, 1, 0, 0};
  std::vector<float> du(4), di(4), du_plain(4), di_plain(4);
  const float masked = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f,
                                          du.data(), di.data(), mask);
  const float plain = InBatchSoftmaxLoss(users.data(), items.data(), 2, 2, 2, {}, {}, 1.0f,
                                         du_plain.data(), di_plain.data());
  const double row1 = std::log(std::exp(0.8) + std::exp(1.0)) - 1.0;  // unchanged row
  EXPECT_NEAR(masked, (0.0 + row1) / 2, 1e-5);  // row 0: only its positive is left
  EXPECT_LT(masked, plain);
  EXPECT_NEAR(du[0], 0.0f, 1e-6);  // row 0's softmax is certain: no gradient
  EXPECT_NEAR(du[1], 0.0f, 1e-6);
}

TEST(InBatchSoftmaxTest, AccidentalHitsAreMasked) {
  // Rows 0 and 1 share item key 5: for row 0, column 1 is its own positive again and must
  // not act as a negative (and vice versa); row 2 keeps every column.
  const int dim = 3;
  const std::vector<float> users = Normalised({1, 2, 0, 0, 1, 1, 2, 0, 1}, dim);
  const std::vector<float> items = Normalised({1, 1, 0, 3, 0, 1, 0, 2, 1}, dim);
  const std::vector<int32_t> keys = {5, 5, 7};
  std::vector<float> du(9), di(9);
  const float masked = InBatchSoftmaxLoss(users.data(), items.data(), 3, 3, dim, keys, {}, 0.2f, du.data(), di.data());
  const float unmasked = InBatchSoftmaxLoss(users.data(), items.data(), 3, 3, dim, {}, {}, 0.2f, du.data(), di.data());
  EXPECT_LT(masked, unmasked);  // removing negatives can only lower the loss
  // Hand value for row 0 with column 1 masked.
  double s[3][3];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      s[i][j] = 0;
      for (int k = 0; k < dim; ++k) s[i][j] += users[i * dim + k] * items[j * dim + k] / 0.2;
    }
  }
  const double row0 = std::log(std::exp(s[0][0]) + std::exp(s[0][2])) - s[0][0];
  const double row1 = std::log(std::exp(s[1][1]) + std::exp(s[1][2])) - s[1][1];
  const double row2 = std::log(std::exp(s[2][0]) + std::exp(s[2][1]) + std::exp(s[2][2])) - s[2][2];
  EXPECT_NEAR(masked, (row0 + row1 + row2) / 3, 1e-5);
}

TEST(InBatchSoftmaxTest, GradientsMatchFiniteDifferences) {
  const int n = 4, dim = 3;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::vector<float> users(n * dim), items(n * dim);
  for (float& x : users) x = uniform(rng);
  for (float& x : items) x = uniform(rng);
  const std::vector<int32_t> keys = {1, 2, 1, 3};
  const std::vector<float> log_q = {-1.0f, -2.0f, -1.0f, -0.5f};
  std::vector<float> du(n * dim), di(n * dim), scratch_u(n * dim), scratch_i(n * dim);
  // Unweighted, and with per-row loss weights.
  for (const std::vector<float>& weight : {std::vector<float>{}, std::vector<float>{1.0f, 0.25f, 2.5f, 1.0f}}) {
    InBatchSoftmaxLoss(users.data(), items.data(), n, n, dim, keys, log_q, 0.3f, du.data(), di.data(), {}, {},
                       weight);
    const auto loss = [&] {
      return static_cast<double>(InBatchSoftmaxLoss(users.data(), items.data(), n, n, dim, keys,
                                                    log_q, 0.3f, scratch_u.data(), scratch_i.data(), {}, {},
                                                    weight));
    };
    for (auto* pair : {&users, &items}) {
      std::vector<float>& v = *pair;
      const std::vector<float>& grad = pair == &users ? du : di;
      for (size_t i = 0; i < v.size(); ++i) {
        const float saved = v[i];
        v[i] = saved + 1e-3f;
        const double plus = loss();
        v[i] = saved - 1e-3f;
        const double minus = loss();
        v[i] = saved;
        const double numeric = (plus - minus) / 2e-3;
        EXPECT_NEAR(grad[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << i;
      }
    }
  }
}

TEST(InBatchSoftmaxTest, ExtraSharedNegativeColumns) {
  // Two examples and one extra shared negative column: each row's softmax runs over three
  // columns; the extra column's gradient is the sum of both rows' pushes.
  const int dim = 2;
  const std::vector<float> users = {1, 0, 0, 1};
  const std::vector<float> items = {1, 0, 0, 1, 0.6f, 0.8f};
  std::vector<float> du(4), di(6);
  const float loss = InBatchSoftmaxLoss(users.data(), items.data(), 2, 3, dim, {}, {}, 1.0f,
                                        du.data(), di.data());
  const double row0 = std::log(std::exp(1.0) + std::exp(0.0) + std::exp(0.6)) - 1.0;
  const double row1 = std::log(std::exp(0.0) + std::exp(1.0) + std::exp(0.8)) - 1.0;
  EXPECT_NEAR(loss, (row0 + row1) / 2, 1e-5);
  const double denom0 = std::exp(1.0) + 1 + std::exp(0.6), denom1 = 1 + std::exp(1.0) + std::exp(0.8);
  // d loss / d item2 = (p0(2) u0 + p1(2) u1) / 2.
  EXPECT_NEAR(di[4], std::exp(0.6) / denom0 / 2, 1e-5);
  EXPECT_NEAR(di[5], std::exp(0.8) / denom1 / 2, 1e-5);
}

}  // namespace
}  // namespace twotower
