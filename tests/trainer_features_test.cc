// The trainer's objectives, negatives, cold start and reporting on the synthetic data.
#include <cmath>
#include <fstream>
#include <map>

#include "gtest/gtest.h"
#include "tests/trained_model.h"
#include "dataset/feature_table.h"
#include "trainer/alias_sampler.h"
#include "trainer/negative_sampler.h"
#include "trainer/training_log.h"
#include "util/file.h"
#include "util/text_proto.h"

namespace twotower {
namespace {

using testing::ScopedTempDir;

TEST(AliasSamplerTest, DrawsInProportionToTheWeights) {
  const std::vector<double> weights = {1, 0, 3, 6};
  absl::StatusOr<AliasSampler> sampler = AliasSampler::Create(weights);
  ASSERT_TRUE(sampler.ok());
  std::mt19937_64 rng(1);
  std::vector<int> counts(4, 0);
  constexpr int kDraws = 200000;
  for (int i = 0; i < kDraws; ++i) ++counts[sampler->Sample(rng)];
  EXPECT_EQ(counts[1], 0);
  for (int i : {0, 2, 3}) {
    EXPECT_NEAR(counts[i] / static_cast<double>(kDraws), weights[i] / 10, 0.005) << i;
    EXPECT_DOUBLE_EQ(sampler->Probability(i), weights[i] / 10);
  }
  EXPECT_FALSE(AliasSampler::Create({}).ok());
  EXPECT_FALSE(AliasSampler::Create({0, 0}).ok());
  EXPECT_FALSE(AliasSampler::Create({1, -1}).ok());
}

double Recall(const std::vector<EvalResult>& results, const std::string& set, int k) {
  for (const EvalResult& r : results) {
    if (r.name != set) continue;
    for (size_t j = 0; j < r.ks.size(); ++j) {
      if (r.ks[j] == k) return r.recall[j];
    }
  }
  ADD_FAILURE() << set << " Recall@" << k << " not found";
  return 0;
}

// Every objective learns the planted structure: well above popularity on warm users.
TEST(TrainerFeaturesTest, EveryObjectiveBeatsPopularity) {
  ScopedTempDir dir;
  testing::TrainedModel base = testing::TrainSynthetic(dir, 1);
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(base.data, {10, 50});
  ASSERT_TRUE(popularity.ok());
  const double popular = Recall(*popularity, "warm", 10);
  for (const auto objective : {v1::TrainingSpec::POINTWISE, v1::TrainingSpec::TRIPLET_HINGE,
                               v1::TrainingSpec::TRIPLET_LOGISTIC, v1::TrainingSpec::SAMPLED_SOFTMAX,
                               v1::TrainingSpec::IN_BATCH_SOFTMAX}) {
    v1::TrainerConfig config = base.config;
    v1::TrainingSpec* t = config.mutable_training();
    t->set_objective(objective);
    t->clear_num_negatives();
    t->set_epochs(6);
    t->set_negative_alpha(0);
    ApplyDefaults(&config);
    ASSERT_TRUE(ValidateTrainerConfig(config).ok());
    absl::StatusOr<TrainingReport> report = Train(config, base.data, TrainOptions{});
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(std::isfinite(report->final_loss));
    EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * popular)
        << v1::TrainingSpec::Objective_Name(objective) << " vs popularity " << popular;
  }
}

TEST(TrainerFeaturesTest, IdDropoutServesColdUsersBetter) {
  ScopedTempDir dir;
  testing::TrainedModel without = testing::TrainSynthetic(dir, 6);
  v1::TrainerConfig config = without.config;
  config.mutable_training()->set_user_id_dropout(0.3f);
  absl::StatusOr<TrainingReport> with = Train(config, without.data, TrainOptions{});
  ASSERT_TRUE(with.ok());
  EXPECT_GT(Recall(with->final_eval, "cold", 50), Recall(without.report.final_eval, "cold", 50));
}

TEST(TrainerFeaturesTest, HardNegativesAreTopRankedNonPositives) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 2);
  absl::StatusOr<NegativeSampler> sampler = NegativeSampler::Create(model.data, 0.75f);
  ASSERT_TRUE(sampler.ok());
  EXPECT_FALSE(sampler->has_hard());
  ASSERT_TRUE(sampler->MineHard(model.data, model.report.bundle.user.tower,
                                model.report.bundle.item_vectors, 20).ok());
  ASSERT_TRUE(sampler->has_hard());
  int checked = 0;
  for (size_t u = 0; u < model.data.train_items_of_user.size(); ++u) {
    if (model.data.train_items_of_user[u].empty()) continue;
    const std::vector<int32_t>& pool = sampler->HardPool(static_cast<int32_t>(u));
    ASSERT_EQ(pool.size(), 20u);
    for (int32_t v : pool) EXPECT_FALSE(model.data.train_items_of_user[u].contains(v));
    ++checked;
  }
  EXPECT_GT(checked, 100);
  // Training with half hard negatives works.
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_objective(v1::TrainingSpec::SAMPLED_SOFTMAX);
  config.mutable_training()->set_num_negatives(4);
  config.mutable_training()->set_hard_negative_fraction(0.5f);
  config.mutable_training()->set_epochs(3);
  ASSERT_TRUE(ValidateTrainerConfig(config).ok());
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(std::isfinite(report->final_loss));
}

TEST(TrainerFeaturesTest, ExposuresAreNeitherPositivesNorNegatives) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,clicked\nu1,a,1\nu1,b,0\nu1,c,1\nu2,a,1\nu2,b,1\nu2,c,0\n");
  v1::TrainerConfig config;
  ASSERT_TRUE(ParseTextProto(R"pb(
    data { train { table { path: "events.csv" header: true } user_column { name: "user" }
                   item_column { name: "item" } label_column { name: "clicked" } } }
    user_tower { id_embedding_dim: 4 output_dim: 4 }
    item_tower { id_embedding_dim: 4 output_dim: 4 }
  )pb", "config", &config).ok());
  ApplyDefaults(&config);
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->exposures_skipped, 2);
  EXPECT_EQ(data->train_users.size(), 4u);
  const int32_t u1 = data->user_row.at("u1"), b = data->item_row.at("b");
  EXPECT_FALSE(data->train_items_of_user[u1].contains(b));
  EXPECT_TRUE(data->exposed_items_of_user[u1].contains(b));
  // Hard-negative pools leave exposures out too.
  absl::StatusOr<NegativeSampler> sampler = NegativeSampler::Create(*data, 0.75f);
  ASSERT_TRUE(sampler.ok());
  absl::StatusOr<Tower> tower = Tower::Create(ShapeFor(config.user_tower(), data->user_encoder), 1);
  absl::StatusOr<Tower> items = Tower::Create(ShapeFor(config.item_tower(), data->item_encoder), 2);
  ASSERT_TRUE(sampler->MineHard(*data, *tower, items->EmbedAll(data->items.rows), 3).ok());
  for (int32_t v : sampler->HardPool(u1)) EXPECT_NE(v, b);
  // A label that is neither clicked nor not is an error, not a guess.
  testing::WriteText(dir.Join("events.csv"), "user,item,clicked\nu1,a,maybe\n");
  EXPECT_FALSE(LoadTrainingData(config, dir.path(), stderr).ok());
}

TEST(TrainerFeaturesTest, HistoryFeatureHoldsTrainingItemsAndTrains) {
  ScopedTempDir dir;
  testing::TrainedModel base = testing::TrainSynthetic(dir, 1);
  v1::TrainerConfig config = base.config;
  v1::FeatureSpec* history = config.mutable_data()->mutable_users()->add_features();
  history->set_name("history");
  history->set_kind(v1::FeatureSpec::HISTORY);
  history->set_embedding_dim(8);
  ApplyDefaults(&config);
  ASSERT_TRUE(ValidateTrainerConfig(config).ok());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(data.ok()) << data.status();
  const int h = data->user_encoder.HistoryField();
  ASSERT_GT(h, 0);
  // A user's stored history is exactly its training items (as history tokens).
  const int32_t u = data->train_users[0];
  absl::flat_hash_set<int32_t> expected;
  for (int32_t v : data->train_items_of_user[u]) expected.insert(data->history_token_of_item[v]);
  const std::span<const int32_t> stored = data->users.rows.Field(u, h);
  EXPECT_EQ(absl::flat_hash_set<int32_t>(stored.begin(), stored.end()), expected);
  config.mutable_training()->set_epochs(4);
  absl::StatusOr<TrainingReport> report = Train(config, *data, TrainOptions{});
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(*data, {10, 50});
  EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * Recall(*popularity, "warm", 10));
}

// history_length keeps the most recent partners (by timestamp, not file order); PRECEDING
// gives each training example only what came before it.
TEST(TrainerFeaturesTest, HistoryLengthAndPrecedingContextFollowTime) {
  ScopedTempDir dir;
  // u1 in time order: b(10) c(20) a(30) d(40), then b again (50).
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,ts\nu1,a,30\nu1,b,10\nu1,c,20\nu1,d,40\nu1,b,50\nu2,a,5\nu2,c,6\n");
  testing::WriteText(dir.Join("users.csv"), "user\nu1\nu2\n");
  v1::TrainerConfig config;
  ASSERT_TRUE(ParseTextProto(R"pb(
    data {
      train { table { path: "events.csv" header: true } user_column { name: "user" }
              item_column { name: "item" } timestamp_column { name: "ts" } }
      users { table { path: "users.csv" header: true } id_column { name: "user" }
              features { name: "history" kind: HISTORY embedding_dim: 4 history_length: 2
                         history_context: PRECEDING } }
    }
    user_tower { id_embedding_dim: 4 output_dim: 4 }
    item_tower { id_embedding_dim: 4 output_dim: 4 }
    training { objective: SAMPLED_SOFTMAX num_negatives: 2 epochs: 2 batch_size: 4 }
  )pb", "config", &config).ok());
  ApplyDefaults(&config);
  ASSERT_TRUE(ValidateTrainerConfig(config).ok()) << ValidateTrainerConfig(config);
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(data.ok()) << data.status();
  const int h = data->user_encoder.HistoryField();
  ASSERT_GT(h, 0);
  const auto tokens = [&](std::vector<std::string> items) {
    std::vector<int32_t> out;
    for (const std::string& item : items) out.push_back(data->user_encoder.TokenRow(h, item));
    return out;
  };
  const auto as_vector = [](std::span<const int32_t> s) { return std::vector<int32_t>(s.begin(), s.end()); };
  // Stored (serving, evaluation): the last 2 distinct items by time.
  EXPECT_EQ(as_vector(data->users.rows.Field(data->user_row.at("u1"), h)), tokens({"a", "d"}));
  EXPECT_EQ(as_vector(data->users.rows.Field(data->user_row.at("u2"), h)), tokens({"a", "c"}));
  // Each training example (file order) sees at most 2 items from before it.
  ASSERT_FALSE(data->user_preceding.empty());
  EXPECT_EQ(as_vector(data->user_preceding.Of(0)), tokens({"b", "c"}));  // u1,a at 30
  EXPECT_EQ(as_vector(data->user_preceding.Of(1)), tokens({}));          // u1,b at 10: the first
  EXPECT_EQ(as_vector(data->user_preceding.Of(2)), tokens({"b"}));       // u1,c at 20
  EXPECT_EQ(as_vector(data->user_preceding.Of(3)), tokens({"c", "a"}));  // u1,d at 40
  EXPECT_EQ(as_vector(data->user_preceding.Of(4)), tokens({"a", "d"}));  // u1,b again at 50
  EXPECT_EQ(as_vector(data->user_preceding.Of(6)), tokens({"a"}));       // u2,c at 6
  // A history in a request is cut like a stored one: distinct ids, the last 2.
  {
    EncodedTable request = data->user_encoder.NewTable();
    const std::vector<RawValue> values = {RawValue{{"a", "b", "a", "c", "d", "c"}, 0, false}};
    data->user_encoder.Encode("someone-new", &values, &request);
    EXPECT_EQ(as_vector(request.Field(0, h)), tokens({"c", "d"}));
  }
  absl::StatusOr<TrainingReport> report = Train(config, *data, TrainOptions{});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(std::isfinite(report->final_loss));
  // Training reads the spans: the same seed with LEAVE_ONE_OUT rows trains differently.
  {
    v1::TrainerConfig leave_one_out = config;
    leave_one_out.mutable_data()->mutable_users()->mutable_features(0)->clear_history_context();
    absl::StatusOr<TrainingData> other = LoadTrainingData(leave_one_out, dir.path(), stderr);
    ASSERT_TRUE(other.ok());
    absl::StatusOr<TrainingReport> other_report = Train(leave_one_out, *other, TrainOptions{});
    ASSERT_TRUE(other_report.ok());
    EXPECT_NE(other_report->final_loss, report->final_loss);
  }

  // The whole history (history_length 0): the repeat of b sees everything before it, b
  // included (the trainer leaves the positive's own token out when it builds the row).
  config.mutable_data()->mutable_users()->mutable_features(0)->set_history_length(0);
  absl::StatusOr<TrainingData> whole = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::vector<int32_t> all_four = {whole->user_encoder.TokenRow(h, "b"), whole->user_encoder.TokenRow(h, "c"),
                                         whole->user_encoder.TokenRow(h, "a"), whole->user_encoder.TokenRow(h, "d")};
  EXPECT_EQ(as_vector(whole->user_preceding.Of(4)), all_four);
  EXPECT_EQ(as_vector(whole->users.rows.Field(whole->user_row.at("u1"), h)), all_four);

  // PRECEDING is refused without timestamps, on the item side, and twice per tower; an
  // unknown context number is refused too.
  {
    v1::TrainerConfig bad = config;
    bad.mutable_data()->mutable_train()->clear_timestamp_column();
    EXPECT_NE(ValidateTrainerConfig(bad).ToString().find("timestamp_column"), std::string::npos);
    bad = config;
    *bad.mutable_data()->mutable_users()->add_features() = config.data().users().features(0);
    bad.mutable_data()->mutable_users()->mutable_features(1)->set_name("history2");
    EXPECT_NE(ValidateTrainerConfig(bad).ToString().find("at most one HISTORY"), std::string::npos);
    bad = config;
    bad.mutable_data()->mutable_users()->mutable_features(0)->set_history_context(
        static_cast<v1::FeatureSpec::HistoryContext>(7));
    EXPECT_FALSE(ValidateTrainerConfig(bad).ok());
    bad = config;
    bad.mutable_data()->mutable_items()->mutable_table()->set_path("items.csv");
    bad.mutable_data()->mutable_items()->mutable_id_column()->set_name("item");
    *bad.mutable_data()->mutable_items()->add_features() = config.data().users().features(0);
    EXPECT_NE(ValidateTrainerConfig(bad).ToString().find("user tower only"), std::string::npos)
        << ValidateTrainerConfig(bad);
  }

  // The default context keeps no per-example spans; the options belong to HISTORY only.
  config.mutable_data()->mutable_users()->mutable_features(0)->clear_history_context();
  absl::StatusOr<TrainingData> leave_one_out = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(leave_one_out.ok());
  EXPECT_TRUE(leave_one_out->user_preceding.empty());
  config.mutable_data()->mutable_users()->mutable_features(0)->set_history_length(-1);
  EXPECT_FALSE(ValidateTrainerConfig(config).ok());
  v1::TrainerConfig categorical = config;
  v1::FeatureSpec* f = categorical.mutable_data()->mutable_users()->mutable_features(0);
  f->set_kind(v1::FeatureSpec::CATEGORICAL);
  f->set_history_length(5);
  f->mutable_column()->set_index(0);
  EXPECT_NE(ValidateTrainerConfig(categorical).ToString().find("HISTORY features only"), std::string::npos)
      << ValidateTrainerConfig(categorical);
}

// Train/serve skew check: for every user of the table, the features sent as a request
// (raw values, typed) encode to exactly the trainer's row and give the same embedding.
TEST(TrainerFeaturesTest, RequestFeaturesEncodeExactlyLikeTraining) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 1);
  const v1::FeatureTableSpec& spec = model.config.data().users();
  absl::StatusOr<FeatureTable> table = ReadFeatureTable(spec, dir.path());
  ASSERT_TRUE(table.ok()) << table.status();
  const Bundle& bundle = model.report.bundle;
  int checked = 0;
  for (size_t r = 0; r < table->ids.size(); ++r) {
    google::protobuf::Map<std::string, v1::FeatureValue> request;
    for (int f = 0; f < spec.features_size(); ++f) {
      const RawValue& raw = table->values[r][f];
      v1::FeatureValue& value = request[spec.features(f).name()];
      switch (spec.features(f).kind()) {
        case v1::FeatureSpec::NUMERIC:
          if (raw.has_number) value.set_numeric(raw.number); else request.erase(spec.features(f).name());
          break;
        case v1::FeatureSpec::MULTI_HOT:
          value.mutable_multi_hot();  // an empty list is a valid (missing) value
          for (const std::string& token : raw.tokens) value.mutable_multi_hot()->add_values(token);
          break;
        default:
          if (raw.tokens.empty()) request.erase(spec.features(f).name()); else value.set_categorical(raw.tokens[0]);
      }
    }
    absl::StatusOr<std::vector<RawValue>> values = bundle.user.encoder.FromRequest(request);
    ASSERT_TRUE(values.ok()) << values.status();
    EncodedTable served = bundle.user.encoder.NewTable();
    bundle.user.encoder.Encode(table->ids[r], &*values, &served);
    const int32_t row = model.data.user_row.at(table->ids[r]);
    EncodedTable trained = bundle.user.encoder.NewTable();
    trained.AppendRowFrom(bundle.users.rows, row);
    ASSERT_EQ(served.indices(), trained.indices()) << table->ids[r];
    ASSERT_EQ(served.numeric(), trained.numeric()) << table->ids[r];
    EXPECT_EQ(bundle.user.tower.EmbedAll(served), bundle.user.tower.EmbedAll(trained));
    ++checked;
  }
  EXPECT_EQ(checked, 600);
}

TEST(TrainerFeaturesTest, SelectionExportsTheBestEvaluatedEpoch) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 1);
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_epochs(6);
  config.mutable_training()->set_eval_every_epochs(1);
  config.mutable_training()->set_select_best_epoch(true);
  config.mutable_training()->set_learning_rate(0.05f);  // noisy on purpose: curves go up and down
  ASSERT_TRUE(ValidateTrainerConfig(config).ok());
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_TRUE(report.ok());
  double best = -1;
  int best_epoch = 0;
  for (const EpochRecord& r : report->history) {
    const double score = Recall(r.eval, "warm", 50) + Recall(r.eval, "cold", 50);
    if (score > best) {
      best = score;
      best_epoch = r.epoch;
    }
  }
  EXPECT_EQ(report->exported_epoch, best_epoch);
  // The exported model is that epoch's: evaluating the bundle gives its numbers.
  absl::StatusOr<std::vector<EvalResult>> again =
      Evaluate(model.data, report->bundle.user.tower, report->bundle.item_vectors, {10, 50}, 0, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_DOUBLE_EQ(Recall(*again, "warm", 50) + Recall(*again, "cold", 50), best);
}

TEST(TrainerFeaturesTest, TwoThreadsTrain) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 1);
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_threads(2);
  config.mutable_training()->set_epochs(4);
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_TRUE(report.ok());
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(model.data, {10, 50});
  EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * Recall(*popularity, "warm", 10));
}

TEST(TrainerFeaturesTest, MetricsFileAndPlot) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 1);
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_epochs(3);
  config.mutable_training()->set_eval_every_epochs(1);
  TrainOptions options;
  options.metrics_path = dir.Join("metrics.jsonl");
  absl::StatusOr<TrainingReport> report = Train(config, model.data, options);
  ASSERT_TRUE(report.ok());
  absl::StatusOr<std::string> metrics = ReadFile(options.metrics_path);
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(std::count(metrics->begin(), metrics->end(), '\n'), 3);
  EXPECT_NE(metrics->find("{\"epoch\":3,\"loss\":"), std::string::npos) << *metrics;
  EXPECT_NE(metrics->find("\"warm\":{\"users\":"), std::string::npos);
  ASSERT_TRUE(CheckPlotterAvailable().ok()) << "gnuplot is a declared dependency";
  ASSERT_TRUE(RenderTrainingPlot(report->history, 50, dir.Join("curves.png")).ok());
  absl::StatusOr<std::string> png = ReadFile(dir.Join("curves.png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png->substr(0, 4), "\x89PNG");
}

}  // namespace
// Interactions alone are enough for derived features: a users block with only a HISTORY
// feature needs no table (every user of the interactions gets their history).
TEST(TrainerFeaturesTest, AHistoryNeedsNoUsersTable) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,ts\nu1,a,30\nu1,b,10\nu1,c,20\nu1,d,40\nu2,a,5\nu2,c,6\n");
  v1::TrainerConfig config;
  ASSERT_TRUE(ParseTextProto(R"pb(
    data {
      train { table { path: "events.csv" header: true } user_column { name: "user" }
              item_column { name: "item" } timestamp_column { name: "ts" } }
      users { features { name: "history" kind: HISTORY embedding_dim: 4 history_length: 2 } }
    }
    user_tower { id_embedding_dim: 4 output_dim: 4 }
    item_tower { id_embedding_dim: 4 output_dim: 4 }
    training { objective: SAMPLED_SOFTMAX num_negatives: 2 epochs: 1 batch_size: 4 }
  )pb", "config", &config).ok());
  ApplyDefaults(&config);
  ASSERT_TRUE(ValidateTrainerConfig(config).ok()) << ValidateTrainerConfig(config);
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_TRUE(data.ok()) << data.status();
  const int h = data->user_encoder.HistoryField();
  ASSERT_GT(h, 0);
  const auto history_of = [&](const std::string& user) {
    std::vector<int32_t> out;
    for (const int32_t token : data->users.rows.Field(data->user_row.at(user), h)) out.push_back(token);
    return out;
  };
  EXPECT_EQ(history_of("u1"), (std::vector<int32_t>{data->user_encoder.TokenRow(h, "a"),
                                                    data->user_encoder.TokenRow(h, "d")}));
  EXPECT_EQ(history_of("u2"), (std::vector<int32_t>{data->user_encoder.TokenRow(h, "a"),
                                                    data->user_encoder.TokenRow(h, "c")}));
  // An id column without a table, or a feature read from a column, still needs the table.
  v1::TrainerConfig with_id = config;
  with_id.mutable_data()->mutable_users()->mutable_id_column()->set_name("user");
  EXPECT_NE(ValidateTrainerConfig(with_id).ToString().find("data.users.id_column: needs a table"), std::string::npos)
      << ValidateTrainerConfig(with_id);
  v1::TrainerConfig with_column = config;
  v1::FeatureSpec* age = with_column.mutable_data()->mutable_users()->add_features();
  age->set_name("age");
  age->set_kind(v1::FeatureSpec::NUMERIC);
  age->mutable_column()->set_name("age");
  EXPECT_NE(ValidateTrainerConfig(with_column).ToString().find("data.users.table.path: must be set"), std::string::npos)
      << ValidateTrainerConfig(with_column);
}

}  // namespace twotower
