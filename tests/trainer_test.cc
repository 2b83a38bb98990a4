// End-to-end training on the synthetic data: the model recovers the planted structure
// far better than popularity, training is reproducible, and the evaluator computes the
// protocol's metrics.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "dataset/synthetic.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/trained_model.h"
#include "trainer/evaluator.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using testing::ScopedTempDir;

const EvalResult& Find(const std::vector<EvalResult>& results, const std::string& name) {
  for (const EvalResult& r : results) {
    if (r.name == name) return r;
  }
  ADD_FAILURE() << "no eval set " << name;
  return results.front();
}

TEST(TrainerTest, RecoversPlantedStructureFarBetterThanPopularity) {
  ScopedTempDir dir;
  const testing::TrainedModel model = testing::TrainSynthetic(dir, 8);
  absl::StatusOr<std::vector<EvalResult>> popularity =
      EvaluatePopularity(model.data, {10, 50});
  ASSERT_THAT(popularity, IsOk());
  const EvalResult& warm = Find(model.report.final_eval, "warm");
  const EvalResult& warm_pop = Find(*popularity, "warm");
  const EvalResult& cold = Find(model.report.final_eval, "cold");
  const EvalResult& cold_pop = Find(*popularity, "cold");
  // ks in configs/synthetic.textproto: 10, 50.
  EXPECT_GT(warm.recall[0], 1.5 * warm_pop.recall[0])
      << "model " << FormatEvalResult(warm) << "\npopularity " << FormatEvalResult(warm_pop);
  EXPECT_GT(warm.ndcg_at_10, 1.5 * warm_pop.ndcg_at_10);
  EXPECT_GT(cold.recall[1], cold_pop.recall[1])
      << "model " << FormatEvalResult(cold) << "\npopularity " << FormatEvalResult(cold_pop);
  EXPECT_TRUE(std::isfinite(model.report.final_loss));
}

TEST(TrainerTest, LearningRateSchedules) {
  v1::TrainingSpec t;
  EXPECT_EQ(LearningRateScale(t, 0, 100), 1.0f);  // LEARNING_RATE_SCHEDULE_CONSTANT
  EXPECT_EQ(LearningRateScale(t, 99, 100), 1.0f);
  t.set_learning_rate_schedule(v1::TrainingSpec::LEARNING_RATE_SCHEDULE_LINEAR_DECAY);
  EXPECT_FLOAT_EQ(LearningRateScale(t, 0, 100), 1.0f);
  EXPECT_FLOAT_EQ(LearningRateScale(t, 25, 100), 0.75f);
  EXPECT_FLOAT_EQ(LearningRateScale(t, 99, 100), 0.01f);
  t.set_learning_rate_schedule(v1::TrainingSpec::LEARNING_RATE_SCHEDULE_COSINE_DECAY);
  EXPECT_FLOAT_EQ(LearningRateScale(t, 0, 100), 1.0f);
  EXPECT_NEAR(LearningRateScale(t, 50, 100), 0.5f, 1e-6);
  EXPECT_NEAR(LearningRateScale(t, 25, 100), 0.5f * (1 + std::cos(M_PI / 4)), 1e-6);
  EXPECT_LT(LearningRateScale(t, 99, 100), 0.001f);
}

// cold_user_balance: user 0 has 1 positive, user 1 has 4, user 2 none. With b = 1 the
// weights are proportional to 1/n (1 : 1/4) and average 1 over the 5 positives:
// 1 * w0 + 4 * w1 = 5 with w0 = 4 w1 gives w1 = 5/8, w0 = 5/2; user 2 keeps 1.
TEST(TrainerTest, ColdRowWeightsCountEveryUserAlike) {
  const std::vector<int32_t> train_users = {1, 0, 1, 1, 1};
  const std::vector<float> b1 = ColdRowWeights(1.0, train_users, 3);
  ASSERT_EQ(b1.size(), 3u);
  EXPECT_FLOAT_EQ(b1[0], 2.5f);
  EXPECT_FLOAT_EQ(b1[1], 0.625f);
  EXPECT_FLOAT_EQ(b1[2], 1.0f);
  // Each user's total weight is the same: 1 x 2.5 = 4 x 0.625.
  EXPECT_FLOAT_EQ(1 * b1[0], 4 * b1[1]);
  // b = 0.5: proportional to n^-0.5 (1 : 1/2), mean 1: w0 + 4 w1 = 5, w0 = 2 w1.
  const std::vector<float> half = ColdRowWeights(0.5, train_users, 3);
  EXPECT_NEAR(half[0], 5.0 / 3, 1e-6);
  EXPECT_NEAR(half[1], 5.0 / 6, 1e-6);
  EXPECT_TRUE(ColdRowWeights(0.0, train_users, 3).empty());  // off: unweighted
}

TEST(TrainerTest, SameSeedGivesTheSameModelBitForBit) {
  ScopedTempDir a, b, c;
  const testing::TrainedModel x = testing::TrainSynthetic(a, 2, 7);
  const testing::TrainedModel y = testing::TrainSynthetic(b, 2, 7);
  const testing::TrainedModel z = testing::TrainSynthetic(c, 2, 8);
  EXPECT_EQ(x.report.bundle.item_vectors, y.report.bundle.item_vectors);
  EXPECT_EQ(x.report.bundle.user.tower.embeddings()[0].weights,
            y.report.bundle.user.tower.embeddings()[0].weights);
  EXPECT_NE(x.report.bundle.item_vectors, z.report.bundle.item_vectors);
}

// An independent, straightforward implementation of PROTOCOL.md section 6.
TEST(TrainerTest, EvaluatorMatchesAStraightforwardImplementation) {
  ScopedTempDir dir;
  const testing::TrainedModel model = testing::TrainSynthetic(dir, 1);
  const TrainingData& data = model.data;
  const Bundle& bundle = model.report.bundle;
  std::vector<std::string> recs;
  absl::StatusOr<std::vector<EvalResult>> results =
      Evaluate(data, bundle.user.tower, bundle.item_vectors, {10, 50}, 20, &recs);
  ASSERT_THAT(results, IsOk());
  const int dim = bundle.embedding_dim();
  const std::vector<float> users = bundle.user.tower.EmbedAll(data.users.rows);
  const int n_items = static_cast<int>(data.items.ids.size());
  for (size_t s = 0; s < data.eval_sets.size(); ++s) {
    const EvalSet& set = data.eval_sets[s];
    double recall10 = 0, recall50 = 0, ndcg = 0;
    for (size_t i = 0; i < set.user_rows.size(); ++i) {
      const int32_t u = set.user_rows[i];
      std::vector<std::pair<float, int>> scored;
      for (int v = 0; v < n_items; ++v) {
        if (data.train_items_of_user[u].contains(v)) continue;
        float score = 0;
        for (int k = 0; k < dim; ++k) score += users[u * dim + k] * bundle.item_vectors[v * dim + k];
        scored.push_back({-score, v});
      }
      std::sort(scored.begin(), scored.end());
      const double total = set.relevant[i].size() + set.unreachable[i];
      int hits10 = 0, hits50 = 0;
      double dcg = 0, idcg = 0;
      for (int r = 0; r < 50; ++r) {
        const bool hit = set.relevant[i].contains(scored[r].second);
        hits50 += hit;
        if (r < 10) {
          hits10 += hit;
          if (hit) dcg += 1 / std::log2(r + 2.0);
        }
      }
      for (int r = 0; r < std::min(10.0, total); ++r) idcg += 1 / std::log2(r + 2.0);
      recall10 += hits10 / total;
      recall50 += hits50 / total;
      ndcg += dcg / idcg;
    }
    const double n = static_cast<double>(set.user_rows.size());
    const EvalResult& got = (*results)[s];
    EXPECT_EQ(got.users, static_cast<int>(n));
    // Ties in float scores may order differently; allow a tiny slack.
    EXPECT_NEAR(got.recall[0], recall10 / n, 1e-3) << set.name;
    EXPECT_NEAR(got.recall[1], recall50 / n, 1e-3) << set.name;
    EXPECT_NEAR(got.ndcg_at_10, ndcg / n, 1e-3) << set.name;
  }
  // The recommendations, one string per set: 20 lines per evaluated user, ranks 1..20.
  ASSERT_EQ(recs.size(), data.eval_sets.size());
  for (size_t s = 0; s < data.eval_sets.size(); ++s) {
    EXPECT_EQ(static_cast<size_t>(std::count(recs[s].begin(), recs[s].end(), '\n')),
              20 * data.eval_sets[s].user_rows.size());
  }
}

// A model whose bundle could not be written (a tower file over protobuf's 2 GiB) is refused
// before its ~3.8 GB of embeddings are allocated and trained, not after the run.
TEST(TrainerTest, AModelTooBigForABundleIsRefusedBeforeTraining) {
  ScopedTempDir dir;
  SyntheticOptions options;
  options.users = 60;
  options.items = 40;
  options.min_clicks = 3;
  options.max_clicks = 6;
  ASSERT_THAT(WriteSyntheticDataset(options, dir.path()), IsOk());
  absl::StatusOr<v1::TrainerConfig> config = testing::SyntheticConfig();
  ASSERT_THAT(config, IsOk());
  // Two hashed features of 2^26 rows x 7: each fits the per-tensor bound, together they are
  // ~3.8 GB of user tower.
  for (v1::FeatureSpec& f : *config->mutable_data()->mutable_users()->mutable_features()) {
    if (f.kind() != v1::FeatureSpec::KIND_CATEGORICAL) continue;
    f.set_hash_buckets(kMaxHashBuckets - 1);
    f.set_embedding_dim(7);
  }
  ASSERT_EQ(ValidateTrainerConfig(*config), absl::OkStatus());
  absl::StatusOr<TrainingData> data = LoadTrainingData(*config, dir.path(), nullptr);
  ASSERT_THAT(data, IsOk());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<TrainingReport> report = Train(*config, *data, TrainOptions{});
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(report.status().message().find("the user tower would take"), std::string::npos) << report.status();
  EXPECT_NE(report.status().message().find("67108864 rows x 7"), std::string::npos) << report.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));  // nothing allocated
}

}  // namespace
}  // namespace twotower
