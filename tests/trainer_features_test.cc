// The trainer's objectives, negatives, cold start and reporting on the synthetic data.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "dataset/feature_table.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/trained_model.h"
#include "trainer/alias_sampler.h"
#include "trainer/negative_sampler.h"
#include "trainer/training_log.h"
#include "util/file.h"
#include "util/text_proto.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using testing::ScopedTempDir;

TEST(AliasSamplerTest, DrawsInProportionToTheWeights) {
  const std::vector<double> weights = {1, 0, 3, 6};
  absl::StatusOr<AliasSampler> sampler = AliasSampler::Create(weights);
  ASSERT_THAT(sampler, IsOk());
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
  ASSERT_THAT(popularity, IsOk());
  const double popular = Recall(*popularity, "warm", 10);
  for (const auto objective : {v1::TrainingSpec::OBJECTIVE_POINTWISE, v1::TrainingSpec::OBJECTIVE_TRIPLET_HINGE,
                               v1::TrainingSpec::OBJECTIVE_TRIPLET_LOGISTIC, v1::TrainingSpec::OBJECTIVE_SAMPLED_SOFTMAX,
                               v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX}) {
    v1::TrainerConfig config = base.config;
    v1::TrainingSpec* t = config.mutable_training();
    t->set_objective(objective);
    t->clear_num_negatives();
    t->set_epochs(6);
    t->set_negative_alpha(0);
    ApplyDefaults(&config);
    ASSERT_THAT(ValidateTrainerConfig(config), IsOk());
    absl::StatusOr<TrainingReport> report = Train(config, base.data, TrainOptions{});
    ASSERT_THAT(report, IsOk());
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
  ASSERT_THAT(with, IsOk());
  EXPECT_GT(Recall(with->final_eval, "cold", 50), Recall(without.report.final_eval, "cold", 50));
}

TEST(TrainerFeaturesTest, HardNegativesAreTopRankedNonPositives) {
  ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 2);
  absl::StatusOr<NegativeSampler> sampler = NegativeSampler::Create(model.data, 0.75f);
  ASSERT_THAT(sampler, IsOk());
  EXPECT_FALSE(sampler->has_hard());
  ASSERT_THAT(sampler->MineHard(model.data, model.report.bundle.user.tower, model.report.bundle.item_vectors, 20),
              IsOk());
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
  config.mutable_training()->set_objective(v1::TrainingSpec::OBJECTIVE_SAMPLED_SOFTMAX);
  config.mutable_training()->set_num_negatives(4);
  config.mutable_training()->set_hard_negative_fraction(0.5f);
  config.mutable_training()->set_epochs(3);
  ASSERT_THAT(ValidateTrainerConfig(config), IsOk());
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(std::isfinite(report->final_loss));
}

TEST(TrainerFeaturesTest, ExposuresAreNeitherPositivesNorNegatives) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,clicked\nu1,a,1\nu1,b,0\nu1,c,1\nu2,a,1\nu2,b,1\nu2,c,0\n");
  v1::TrainerConfig config;
  ASSERT_THAT(ParseTextProto(R"pb(
                               data {
                                 train {
                                   table { path: "events.csv" header: true }
                                   user_column { name: "user" }
                                   item_column { name: "item" }
                                   label_column { name: "clicked" }
                                 }
                               }
                               user_tower { id_embedding_dim: 4 output_dim: 4 }
                               item_tower { id_embedding_dim: 4 output_dim: 4 }
                             )pb",
                             "config", &config),
              IsOk());
  ApplyDefaults(&config);
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
  EXPECT_EQ(data->exposures_skipped, 2);
  EXPECT_EQ(data->train_users.size(), 4u);
  const int32_t u1 = data->user_row.at("u1"), b = data->item_row.at("b");
  EXPECT_FALSE(data->train_items_of_user[u1].contains(b));
  EXPECT_TRUE(data->exposed_items_of_user[u1].contains(b));
  // Hard-negative pools leave exposures out too.
  absl::StatusOr<NegativeSampler> sampler = NegativeSampler::Create(*data, 0.75f);
  ASSERT_THAT(sampler, IsOk());
  absl::StatusOr<Tower> tower = Tower::Create(ShapeFor(config.user_tower(), data->user_encoder), 1);
  absl::StatusOr<Tower> items = Tower::Create(ShapeFor(config.item_tower(), data->item_encoder), 2);
  ASSERT_THAT(sampler->MineHard(*data, *tower, items->EmbedAll(data->items.rows), 3), IsOk());
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
  history->set_kind(v1::FeatureSpec::KIND_HISTORY);
  history->set_embedding_dim(8);
  ApplyDefaults(&config);
  ASSERT_THAT(ValidateTrainerConfig(config), IsOk());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
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
  ASSERT_THAT(report, IsOk());
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(*data, {10, 50});
  EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * Recall(*popularity, "warm", 10));
}

// A small dataset's config: events.csv (user, item, ts) and `users`, a users block with
// a 4-d KIND_HISTORY feature; parsed, defaulted and validated into *config.
void HistoryConfig(const std::string& users, int epochs, v1::TrainerConfig* config) {
  ASSERT_THAT(ParseTextProto(absl::StrCat(R"pb(
    data {
      train {
        table { path: "events.csv" header: true }
        user_column { name: "user" }
        item_column { name: "item" }
        timestamp_column { name: "ts" }
      }
      users {)pb", users, R"pb(}
    }
    user_tower { id_embedding_dim: 4 output_dim: 4 }
    item_tower { id_embedding_dim: 4 output_dim: 4 }
    training { objective: OBJECTIVE_SAMPLED_SOFTMAX num_negatives: 2 batch_size: 4 epochs: )pb", epochs, " }"),
                             "config", config),
              IsOk());
  ApplyDefaults(config);
  ASSERT_THAT(ValidateTrainerConfig(*config), IsOk());
}

// history_length keeps the most recent partners (by timestamp, not file order); HISTORY_CONTEXT_PRECEDING
// gives each training example only what came before it.
TEST(TrainerFeaturesTest, HistoryLengthAndPrecedingContextFollowTime) {
  ScopedTempDir dir;
  // u1 in time order: b(10) c(20) a(30) d(40), then b again (50).
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,ts\nu1,a,30\nu1,b,10\nu1,c,20\nu1,d,40\nu1,b,50\nu2,a,5\nu2,c,6\n");
  testing::WriteText(dir.Join("users.csv"), "user\nu1\nu2\n");
  v1::TrainerConfig config;
  ASSERT_NO_FATAL_FAILURE(HistoryConfig(R"pb(table { path: "users.csv" header: true } id_column { name: "user" }
              features { name: "history" kind: KIND_HISTORY embedding_dim: 4 history_length: 2
                         history_context: HISTORY_CONTEXT_PRECEDING })pb", 2, &config));
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
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
  // The whole timeline before an example, uncut (SHORT_HISTORY_FROM_FIRST reads it).
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(3)), tokens({"b", "c", "a"}));
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(4)), tokens({"b", "c", "a", "d"}));
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(1)), tokens({}));
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(6)), tokens({"a"}));
  // ... and as they were `gap` items earlier (history_gap_max): u1,d at 40 saw c a; one
  // item earlier b c; two earlier b; more: nothing.
  EXPECT_EQ(as_vector(data->user_preceding.Of(3, 0)), tokens({"c", "a"}));
  EXPECT_EQ(as_vector(data->user_preceding.Of(3, 1)), tokens({"b", "c"}));
  EXPECT_EQ(as_vector(data->user_preceding.Of(3, 2)), tokens({"b"}));
  EXPECT_EQ(as_vector(data->user_preceding.Of(3, 7)), tokens({}));
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(4, 1)), tokens({"b", "c", "a"}));
  EXPECT_EQ(as_vector(data->user_preceding.Timeline(4, 9)), tokens({}));
  // A history in a request is cut like a stored one: distinct ids, the last 2.
  {
    EncodedTable request = data->user_encoder.NewTable();
    const std::vector<RawValue> values = {RawValue{{"a", "b", "a", "c", "d", "c"}, 0, false}};
    data->user_encoder.Encode("someone-new", &values, &request);
    EXPECT_EQ(as_vector(request.Field(0, h)), tokens({"c", "d"}));
  }
  absl::StatusOr<TrainingReport> report = Train(config, *data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(std::isfinite(report->final_loss));
  // Training reads the spans: the same seed with HISTORY_CONTEXT_LEAVE_ONE_OUT rows trains differently.
  {
    v1::TrainerConfig leave_one_out = config;
    leave_one_out.mutable_data()->mutable_users()->mutable_features(0)->clear_history_context();
    absl::StatusOr<TrainingData> other = LoadTrainingData(leave_one_out, dir.path(), stderr);
    ASSERT_THAT(other, IsOk());
    absl::StatusOr<TrainingReport> other_report = Train(leave_one_out, *other, TrainOptions{});
    ASSERT_THAT(other_report, IsOk());
    EXPECT_NE(other_report->final_loss, report->final_loss);
  }

  // The whole history (history_length 0): the repeat of b sees everything before it, b
  // included (the trainer leaves the positive's own token out when it builds the row).
  config.mutable_data()->mutable_users()->mutable_features(0)->set_history_length(0);
  absl::StatusOr<TrainingData> whole = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(whole, IsOk());
  const std::vector<int32_t> all_four = {whole->user_encoder.TokenRow(h, "b"), whole->user_encoder.TokenRow(h, "c"),
                                         whole->user_encoder.TokenRow(h, "a"), whole->user_encoder.TokenRow(h, "d")};
  EXPECT_EQ(as_vector(whole->user_preceding.Of(4)), all_four);
  EXPECT_EQ(as_vector(whole->users.rows.Field(whole->user_row.at("u1"), h)), all_four);

  // HISTORY_CONTEXT_PRECEDING is refused without timestamps, on the item side, and twice per tower; an
  // unknown context number is refused too.
  {
    v1::TrainerConfig bad = config;
    bad.mutable_data()->mutable_train()->clear_timestamp_column();
    EXPECT_NE(ValidateTrainerConfig(bad).ToString().find("timestamp_column"), std::string::npos);
    bad = config;
    *bad.mutable_data()->mutable_users()->add_features() = config.data().users().features(0);
    bad.mutable_data()->mutable_users()->mutable_features(1)->set_name("history2");
    EXPECT_NE(ValidateTrainerConfig(bad).ToString().find("at most one KIND_HISTORY"), std::string::npos);
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

  // The default context keeps no per-example spans; the options belong to KIND_HISTORY only.
  config.mutable_data()->mutable_users()->mutable_features(0)->clear_history_context();
  absl::StatusOr<TrainingData> leave_one_out = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(leave_one_out, IsOk());
  EXPECT_TRUE(leave_one_out->user_preceding.empty());
  config.mutable_data()->mutable_users()->mutable_features(0)->set_history_length(-1);
  EXPECT_FALSE(ValidateTrainerConfig(config).ok());
  v1::TrainerConfig categorical = config;
  v1::FeatureSpec* f = categorical.mutable_data()->mutable_users()->mutable_features(0);
  f->set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
  f->set_history_length(5);
  f->mutable_column()->set_index(0);
  EXPECT_NE(ValidateTrainerConfig(categorical).ToString().find("KIND_HISTORY features only"), std::string::npos)
      << ValidateTrainerConfig(categorical);
}

// Tests that read the synthetic data and a 1-epoch model, shared by the suite.
class SharedModelTest : public testing::TrainedModelTest<1> {};

// Train/serve skew check: for every user of the table, the features sent as a request
// (raw values, typed) encode to exactly the trainer's row and give the same embedding.
TEST_F(SharedModelTest, RequestFeaturesEncodeExactlyLikeTraining) {
  const testing::TrainedModel& model = *model_;
  const v1::FeatureTableSpec& spec = model.config.data().users();
  absl::StatusOr<FeatureTable> table = ReadFeatureTable(spec, data_dir_->path());
  ASSERT_THAT(table, IsOk());
  const Bundle& bundle = model.report.bundle;
  int checked = 0;
  for (size_t r = 0; r < table->ids.size(); ++r) {
    google::protobuf::Map<std::string, v1::FeatureValue> request;
    for (int f = 0; f < spec.features_size(); ++f) {
      const RawValue& raw = table->values[r][f];
      v1::FeatureValue& value = request[spec.features(f).name()];
      switch (spec.features(f).kind()) {
        case v1::FeatureSpec::KIND_NUMERIC:
          if (raw.has_number) value.set_numeric(raw.number); else request.erase(spec.features(f).name());
          break;
        case v1::FeatureSpec::KIND_MULTI_HOT:
          value.mutable_multi_hot();  // an empty list is a valid (missing) value
          for (const std::string& token : raw.tokens) value.mutable_multi_hot()->add_values(token);
          break;
        default:
          if (raw.tokens.empty()) request.erase(spec.features(f).name()); else value.set_categorical(raw.tokens[0]);
      }
    }
    absl::StatusOr<std::vector<RawValue>> values = bundle.user.encoder.FromRequest(request);
    ASSERT_THAT(values, IsOk());
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

// DrawUserDrop: the same seed draws the same drops; the rates are applied (independently
// for the id and the history, short cuts only where in scope); without the history options
// it draws one number per example, as before they existed.
TEST(TrainerFeaturesTest, UserDropsFollowTheRatesAndTheSeed) {
  v1::TrainingSpec t;
  t.set_user_id_dropout(0.3f);
  {
    std::mt19937_64 rng(5), reference(5);
    for (int i = 0; i < 1000; ++i) {
      const UserDrop drop = DrawUserDrop(t, rng);
      EXPECT_EQ(drop.id, (reference() >> 11) * 0x1.0p-53 < 0.3);
      EXPECT_EQ(drop.history, drop.id);  // unset: the history goes with the id
      EXPECT_EQ(drop.keep, 0u);
    }
    EXPECT_EQ(rng(), reference());
  }
  t.set_user_history_dropout(0.5f);
  t.set_short_history_rate(1.0f);
  t.set_short_history_max_length(5);
  const auto draw = [&t](uint64_t seed, int n) {
    std::mt19937_64 rng(seed);
    std::vector<UserDrop> drops;
    for (int i = 0; i < n; ++i) drops.push_back(DrawUserDrop(t, rng));
    return drops;
  };
  constexpr int kDraws = 100000;
  const std::vector<UserDrop> drops = draw(7, kDraws);
  const std::vector<UserDrop> again = draw(7, kDraws);
  const std::vector<UserDrop> other = draw(8, kDraws);
  int same = 0, differs = 0;
  for (int i = 0; i < kDraws; ++i) {
    same += drops[i].id == again[i].id && drops[i].history == again[i].history && drops[i].keep == again[i].keep;
    differs += drops[i].id != other[i].id || drops[i].keep != other[i].keep;
  }
  EXPECT_EQ(same, kDraws);
  EXPECT_GT(differs, kDraws / 10);
  int ids = 0, histories = 0, both = 0, cut = 0;
  std::map<size_t, int> lengths;
  for (const UserDrop& d : drops) {
    ids += d.id;
    histories += d.history;
    both += d.id && d.history;
    if (d.keep > 0) {
      ++cut;
      ++lengths[d.keep];
      EXPECT_TRUE(d.id && !d.history);  // SHORT_HISTORY_SCOPE_ID_DROPPED: only the new-user path
    } else {
      EXPECT_FALSE(d.id && !d.history);  // rate 1: every one of those is cut
    }
  }
  EXPECT_NEAR(ids / double(kDraws), 0.3, 0.01);
  EXPECT_NEAR(histories / double(kDraws), 0.5, 0.01);
  EXPECT_NEAR(both / double(kDraws), 0.15, 0.01);  // independent
  EXPECT_NEAR(cut / double(kDraws), 0.15, 0.01);
  ASSERT_EQ(lengths.size(), 5u);  // 1..5, uniform
  for (const auto& [length, count] : lengths) {
    EXPECT_GE(length, 1u);
    EXPECT_LE(length, 5u);
    EXPECT_NEAR(count / double(cut), 0.2, 0.02) << length;
  }
  // SHORT_HISTORY_SCOPE_ALL, rate 0.5: half of the rows that keep a history are cut, known ids too.
  t.set_short_history_scope(v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL);
  t.set_short_history_rate(0.5f);
  t.set_short_history_max_length(2);
  int kept = 0, kept_cut = 0, known_cut = 0;
  for (const UserDrop& d : draw(9, kDraws)) {
    if (d.history) {
      EXPECT_EQ(d.keep, 0u);
      continue;
    }
    ++kept;
    kept_cut += d.keep > 0;
    known_cut += d.keep > 0 && !d.id;
    EXPECT_LE(d.keep, 2u);
  }
  EXPECT_NEAR(kept_cut / double(kept), 0.5, 0.02);
  EXPECT_NEAR(known_cut / double(kept_cut), 0.7, 0.02);
  // history_gap_max: a gap uniform in 0..max for every example, after the other draws.
  {
    v1::TrainingSpec gaps;
    gaps.set_user_id_dropout(0.3f);
    gaps.set_history_gap_max(3);
    std::mt19937_64 rng(11), reference(11);
    std::map<int64_t, int> counts;
    for (int i = 0; i < 40000; ++i) {
      const UserDrop d = DrawUserDrop(gaps, rng);
      EXPECT_EQ(d.id, (reference() >> 11) * 0x1.0p-53 < 0.3);
      EXPECT_EQ(d.gap, static_cast<int64_t>(reference() % 4));
      ++counts[d.gap];
    }
    ASSERT_EQ(counts.size(), 4u);
    for (const auto& [gap, count] : counts) EXPECT_NEAR(count / 40000.0, 0.25, 0.01) << gap;
  }
  // short_history_from marks the cuts; SHORT_HISTORY_FROM_RANDOM draws a seed for each.
  t.set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST);
  for (const UserDrop& d : draw(10, 1000)) {
    if (d.keep > 0) {
      EXPECT_EQ(d.from, v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST);
    }
  }
  t.set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM);
  std::set<uint64_t> seeds;
  int cuts = 0;
  for (const UserDrop& d : draw(10, 1000)) {
    if (d.keep == 0) continue;
    ++cuts;
    seeds.insert(d.seed);
    EXPECT_EQ(d.from, v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM);
  }
  EXPECT_EQ(static_cast<int>(seeds.size()), cuts);
}

// AppendTrainingUser: the example's history minus its positive, emptied or cut to its last
// items; the id replaced by the OOV row; the other fields untouched.
TEST(TrainerFeaturesTest, TrainingUserRowsCarryTheDrawnHistory) {
  EncodedTable all(3, 1);  // id, a categorical feature, the history
  all.AppendRow({{4}, {2}, {1, 2, 3}}, std::vector<float>{0.5f});
  const std::vector<int32_t> history = {7, 8, 9, 10, 11};
  std::vector<int32_t> buffer;
  const auto row = [&](std::span<const int32_t> h, int32_t token, UserDrop drop) {
    EncodedTable out(3, 1);
    AppendTrainingUser(all, 0, 2, h, token, drop, &out, &buffer);
    EXPECT_EQ(out.size(), 1);
    EXPECT_EQ(std::vector<int32_t>(out.Field(0, 1).begin(), out.Field(0, 1).end()), std::vector<int32_t>{2});
    EXPECT_EQ(out.Numeric(0)[0], 0.5f);
    std::vector<int32_t> fields = {out.Id(0)};
    for (const int32_t r : out.Field(0, 2)) fields.push_back(r);
    return fields;  // id, then the history
  };
  using V = std::vector<int32_t>;
  EXPECT_EQ(row(history, 9, {}), (V{4, 7, 8, 10, 11}));
  EXPECT_EQ(row(history, 0, {}), (V{4, 7, 8, 9, 10, 11}));  // OOV token: nothing removed
  EXPECT_EQ(row(history, 9, {.keep = 2}), (V{4, 10, 11}));  // cut after removing the positive
  EXPECT_EQ(row(history, 9, {.keep = 9}), (V{4, 7, 8, 10, 11}));
  EXPECT_EQ(row(history, 9, {.id = true, .keep = 1}), (V{0, 11}));  // a new user with one click
  EXPECT_EQ(row(history, 9, {.id = true, .history = true}), (V{0, 0}));  // nothing: the OOV row
  EXPECT_EQ(row(history, 9, {.history = true}), (V{4, 0}));
  EXPECT_EQ(row(std::vector<int32_t>{9}, 9, {}), (V{4, 0}));
  EXPECT_EQ(row(all.Field(0, 2), 0, {.keep = 2}), (V{4, 2, 3}));  // a stored (HISTORY_CONTEXT_LEAVE_ONE_OUT) row
  // SHORT_HISTORY_FROM_FIRST: the first items of the timeline before the example.
  EXPECT_EQ(row(history, 7, {.id = true, .keep = 2, .from = v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST}), (V{0, 8, 9}));
  EXPECT_EQ(row(history, 9, {.keep = 3, .from = v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST}), (V{4, 7, 8, 10}));
  EXPECT_EQ(row(history, 9, {.keep = 7, .from = v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST}), (V{4, 7, 8, 10, 11}));
  // SHORT_HISTORY_FROM_RANDOM / _ANY: `keep` distinct items of the history (the positive left out), in their
  // order, the same for the same seed, each item equally likely.
  std::map<int32_t, int> picked;
  std::set<std::vector<int32_t>> subsets;
  for (uint64_t seed = 1; seed <= 3000; ++seed) {
    const UserDrop drop{.keep = 2, .from = v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM, .seed = seed};
    const std::vector<int32_t> got = row(history, 9, drop);
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0], 4);
    EXPECT_LT(got[1], got[2]);  // time order kept (the ids grow with time here)
    EXPECT_NE(got[1], 9);
    EXPECT_NE(got[2], 9);
    EXPECT_EQ(got, row(history, 9, drop));
    ++picked[got[1]];
    ++picked[got[2]];
    subsets.insert(got);
  }
  EXPECT_EQ(subsets.size(), 6u);  // all C(4, 2) pairs of {7, 8, 10, 11}
  ASSERT_EQ(picked.size(), 4u);
  for (const auto& [item, count] : picked) EXPECT_NEAR(count / 6000.0, 0.25, 0.03) << item;
}

// An eval set with a request-time history, on a hand-made split whose ranking is fixed:
// the user tower outputs the same vector for everyone and the items are scored 6..1, so
// the ranking is the catalogue in that order minus the excluded items.
TEST(TrainerFeaturesTest, EvalSetWithARequestHistoryScoresLikeTheProtocol) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("train.csv"), "user,item,ts\nu1,a,1\nu1,b,2\nu2,c,3\nu2,a,4\nu2,d,5\n");
  testing::WriteText(dir.Join("users.csv"), "user,segment\nu1,s1\nu2,s2\nn1,s1\n");
  testing::WriteText(dir.Join("items.csv"), "item\na\nb\nc\nd\ne\nf\n");
  testing::WriteText(dir.Join("cold.csv"), "user,item\nn1,a\nn1,b\nn1,d\nn1,e\n");
  // Out of time order in the file: the history is a (t=1), then c (t=2).
  testing::WriteText(dir.Join("history.csv"), "user,item,ts\nn1,c,2\nn1,a,1\n");
  v1::TrainerConfig config;
  ASSERT_THAT(ParseTextProto(R"pb(
    data {
      train { table { path: "train.csv" header: true } user_column { name: "user" }
              item_column { name: "item" } timestamp_column { name: "ts" } }
      users { table { path: "users.csv" header: true } id_column { name: "user" }
              features { name: "segment" kind: KIND_CATEGORICAL column { name: "segment" } embedding_dim: 2 }
              features { name: "history" kind: KIND_HISTORY embedding_dim: 2 } }
      items { table { path: "items.csv" header: true } id_column { name: "item" } }
      eval { name: "cold" interactions { table { path: "cold.csv" header: true }
             user_column { name: "user" } item_column { name: "item" } } }
      eval { name: "cold5" interactions { table { path: "cold.csv" header: true }
             user_column { name: "user" } item_column { name: "item" } }
             history { table { path: "history.csv" header: true } user_column { name: "user" }
                       item_column { name: "item" } timestamp_column { name: "ts" } } }
    }
    user_tower { id_embedding_dim: 2 output_dim: 1 }
    item_tower { id_embedding_dim: 2 output_dim: 1 }
  )pb", "config", &config), IsOk());
  ApplyDefaults(&config);
  ASSERT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
  ASSERT_EQ(data->eval_sets.size(), 2u);
  const EvalSet& cold = data->eval_sets[0];
  const EvalSet& cold5 = data->eval_sets[1];
  EXPECT_FALSE(cold.has_history);
  ASSERT_TRUE(cold5.has_history);
  ASSERT_EQ(cold5.user_rows.size(), 1u);
  const int32_t n1 = data->user_row.at("n1");
  EXPECT_EQ(cold5.user_rows[0], n1);
  const auto rows = [&](std::vector<std::string> items) {
    absl::flat_hash_set<int32_t> out;
    for (const std::string& item : items) out.insert(data->item_row.at(item));
    return out;
  };
  EXPECT_EQ(cold5.excluded[0], rows({"a", "c"}));
  EXPECT_EQ(cold5.relevant[0], rows({"b", "d", "e"}));  // a is in the history: seen, not a target
  EXPECT_EQ(cold.relevant[0], rows({"a", "b", "d", "e"}));
  // The request row: the OOV id, the user's features from its table row, the history in
  // time order; exactly what the server encodes from a request carrying them.
  const int h = data->user_encoder.HistoryField();
  ASSERT_EQ(cold5.request_rows.size(), 1);
  EXPECT_EQ(cold5.request_rows.Id(0), Vocabulary::kOov);
  const std::span<const int32_t> history = cold5.request_rows.Field(0, h);
  EXPECT_EQ(std::vector<int32_t>(history.begin(), history.end()),
            (std::vector<int32_t>{data->user_encoder.TokenRow(h, "a"), data->user_encoder.TokenRow(h, "c")}));
  google::protobuf::Map<std::string, v1::FeatureValue> request;
  request["segment"].set_categorical("s1");
  request["history"].mutable_multi_hot()->add_values("a");
  request["history"].mutable_multi_hot()->add_values("c");
  absl::StatusOr<std::vector<RawValue>> values = data->user_encoder.FromRequest(request);
  ASSERT_THAT(values, IsOk());
  EncodedTable served = data->user_encoder.NewTable();
  data->user_encoder.Encode("n1", &*values, &served);
  EXPECT_EQ(served.indices(), cold5.request_rows.indices());
  EXPECT_EQ(served.offsets(), cold5.request_rows.offsets());

  // A user tower whose output is [1] for everyone; item scores a..f = 6..1.
  absl::StatusOr<Tower> tower = Tower::Create(ShapeFor(config.user_tower(), data->user_encoder), 1);
  ASSERT_THAT(tower, IsOk());
  ASSERT_EQ(tower->layers().size(), 1u);
  std::fill(tower->layers()[0].weights.begin(), tower->layers()[0].weights.end(), 0.0f);
  tower->layers()[0].bias = {1.0f};
  std::vector<float> item_vectors(data->items.ids.size());
  for (const auto& [item, score] : std::vector<std::pair<std::string, float>>{
           {"a", 6}, {"b", 5}, {"c", 4}, {"d", 3}, {"e", 2}, {"f", 1}}) {
    item_vectors[data->item_row.at(item)] = score;
  }
  std::vector<std::string> recs;
  absl::StatusOr<std::vector<EvalResult>> results = Evaluate(*data, *tower, item_vectors, {2, 4}, 4, &recs);
  ASSERT_THAT(results, IsOk());
  // cold: a b c d ranked; targets {a, b, d, e}: Recall@2 = 2/4, Recall@4 = 3/4; hits at
  // ranks 1, 2, 4, 5 of 6.
  const auto dcg = [](std::vector<int> ranks) {
    double sum = 0;
    for (const int r : ranks) sum += 1 / std::log2(r + 1.0);
    return sum;
  };
  EXPECT_DOUBLE_EQ((*results)[0].recall[0], 2.0 / 4);
  EXPECT_DOUBLE_EQ((*results)[0].recall[1], 3.0 / 4);
  EXPECT_NEAR((*results)[0].ndcg_at_10, dcg({1, 2, 4, 5}) / dcg({1, 2, 3, 4}), 1e-12);
  // cold5: a and c excluded, so b d e f; targets {b, d, e}: Recall@2 = 2/3, Recall@4 = 1,
  // NDCG@10 = 1.
  EXPECT_DOUBLE_EQ((*results)[1].recall[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ((*results)[1].recall[1], 1.0);
  EXPECT_NEAR((*results)[1].ndcg_at_10, 1.0, 1e-12);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0], "n1\ta\t1\nn1\tb\t2\nn1\tc\t3\nn1\td\t4\n");
  EXPECT_EQ(recs[1], "n1\tb\t1\nn1\td\t2\nn1\te\t3\nn1\tf\t4\n");
}

// On the synthetic data's planted clusters, with the user tower reading only the id and
// the history: a new user known by 3 clicks is served well only when that path
// ("unknown id, known recent items") was trained, i.e. with the history dropped
// independently of the id and short histories sampled (as configs/ml100k.textproto).
TEST(TrainerFeaturesTest, IndependentHistoryDropoutServesNewUsersFromTheirFirstClicks) {
  ScopedTempDir dir;
  SyntheticOptions options = testing::TrainingSyntheticOptions();
  options.cold_user_fraction = 0.2;
  ASSERT_THAT(WriteSyntheticDataset(options, dir.path()), IsOk());
  // cold5-like split of test_cold.csv: each cold user's first 3 clicks are its history.
  absl::StatusOr<std::string> cold = ReadFile(dir.Join("test_cold.csv"));
  ASSERT_THAT(cold, IsOk());
  std::string history = "user_id,item_id,timestamp\n", targets = history;
  std::map<std::string, int> seen;
  std::istringstream lines(*cold);
  std::string line;
  std::getline(lines, line);  // header; rows are in time order per user
  while (std::getline(lines, line)) {
    const std::string user = line.substr(0, line.find(','));
    (seen[user]++ < 3 ? history : targets) += line + "\n";
  }
  testing::WriteText(dir.Join("history.csv"), history);
  testing::WriteText(dir.Join("targets.csv"), targets);
  absl::StatusOr<v1::TrainerConfig> loaded = testing::SyntheticConfigWithUserFeature(
      R"pb(name: "history" kind: KIND_HISTORY embedding_dim: 16 history_length: 20
           history_context: HISTORY_CONTEXT_PRECEDING)pb");
  ASSERT_THAT(loaded, IsOk());
  v1::TrainerConfig config = *loaded;
  config.mutable_data()->clear_eval();
  ASSERT_THAT(ParseTextProto(R"pb(
                               name: "new"
                               interactions {
                                 table { path: "targets.csv" header: true }
                                 user_column { name: "user_id" }
                                 item_column { name: "item_id" }
                               }
                               history {
                                 table { path: "history.csv" header: true }
                                 user_column { name: "user_id" }
                                 item_column { name: "item_id" }
                                 timestamp_column { name: "timestamp" }
                               }
                             )pb",
                             "eval", config.mutable_data()->add_eval()),
              IsOk());
  v1::TrainingSpec* t = config.mutable_training();
  t->set_epochs(8);
  t->set_user_id_dropout(0.3f);
  ApplyDefaults(&config);
  ASSERT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
  ASSERT_GT(data->eval_sets[0].user_rows.size(), 80u);
  absl::StatusOr<TrainingReport> coupled = Train(config, *data, TrainOptions{});
  ASSERT_THAT(coupled, IsOk());
  t->set_user_history_dropout(0.3f);
  t->set_short_history_rate(1.0f);
  t->set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM);
  ASSERT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  absl::StatusOr<TrainingReport> independent = Train(config, *data, TrainOptions{});
  ASSERT_THAT(independent, IsOk());
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(*data, {10, 50});
  ASSERT_THAT(popularity, IsOk());
  const double before = Recall(coupled->final_eval, "new", 10);
  const double after = Recall(independent->final_eval, "new", 10);
  std::printf("new users' Recall@10: popularity %.4f, coupled dropout %.4f, independent %.4f\n",
              Recall(*popularity, "new", 10), before, after);
  EXPECT_GT(after, 1.3 * before);
  EXPECT_GT(after, 1.5 * Recall(*popularity, "new", 10));
}

// An attention-pooled history (POOLING_ATTENTION, history_gap_max) trains, learns its
// pooling parameters (they start at 0, the mean), and serves from the written bundle: a
// request that carries a user's stored history as item ids gets the stored row's vector.
TEST(TrainerFeaturesTest, AttentionPooledHistoryTrainsAndServesFromTheBundle) {
  ScopedTempDir dir;
  ASSERT_THAT(WriteSyntheticDataset(testing::TrainingSyntheticOptions(), dir.path()), IsOk());
  absl::StatusOr<v1::TrainerConfig> loaded = testing::SyntheticConfigWithUserFeature(
      R"pb(name: "history" kind: KIND_HISTORY embedding_dim: 16 history_length: 10
           history_context: HISTORY_CONTEXT_PRECEDING pooling: POOLING_ATTENTION pooling_heads: 2)pb");
  ASSERT_THAT(loaded, IsOk());
  v1::TrainerConfig config = *loaded;
  config.mutable_training()->set_epochs(6);
  config.mutable_training()->set_history_gap_max(2);
  ApplyDefaults(&config);
  ASSERT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
  absl::StatusOr<TrainingReport> report = Train(config, *data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(*data, {10, 50});
  ASSERT_THAT(popularity, IsOk());
  EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * Recall(*popularity, "warm", 10));

  const int h = data->user_encoder.HistoryField();
  const TowerShape::Field& field = report->bundle.user.tower.shape().fields[h];
  ASSERT_EQ(field.heads, 2);
  ASSERT_EQ(field.positions, 10);
  const EmbeddingTable& table = report->bundle.user.tower.embeddings()[h];
  double moved = 0;
  for (int32_t r = field.vocabulary_rows(); r < field.rows; ++r) {
    for (int k = 0; k < table.dim; ++k) moved += std::abs(table.Row(r)[k]);
  }
  EXPECT_GT(moved, 0.01) << "the queries and position weights never moved from 0";

  ASSERT_THAT(WriteBundle(report->bundle, dir.Join("bundle")), IsOk());
  absl::StatusOr<Bundle> bundle = ReadBundle(dir.Join("bundle"));
  ASSERT_THAT(bundle, IsOk());
  const TowerModel& user = bundle->user;
  const int dim = user.tower.output_dim();
  std::vector<float> stored(dim), request(dim), trained(dim);
  TowerActivations acts;
  int with_history = 0;
  for (int r = 0; r < bundle->users.rows.size(); ++r) {
    std::vector<RawValue> values(user.encoder.schema().size());
    for (const int32_t token : bundle->users.rows.Field(r, h)) {
      if (token > 0) values[0].tokens.emplace_back(user.encoder.FieldVocabulary(h).tokens()[token - 1]);
    }
    with_history += values[0].tokens.size() > 1;
    EncodedTable one = user.encoder.NewTable();
    one.AppendRowFrom(bundle->users.rows, r);
    user.tower.Forward(one, &acts, stored.data());
    report->bundle.user.tower.Forward(one, &acts, trained.data());
    one.Clear();
    user.encoder.Encode(bundle->users.ids[r], &values, &one);
    user.tower.Forward(one, &acts, request.data());
    ASSERT_EQ(stored, trained) << bundle->users.ids[r];
    ASSERT_EQ(stored, request) << bundle->users.ids[r];
  }
  EXPECT_GT(with_history, 300);
}

TEST_F(SharedModelTest, SelectionExportsTheBestEvaluatedEpoch) {
  const testing::TrainedModel& model = *model_;
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_epochs(6);
  config.mutable_training()->set_eval_every_epochs(1);
  config.mutable_training()->set_select_best_epoch(true);
  config.mutable_training()->set_learning_rate(0.05f);  // noisy on purpose: curves go up and down
  ASSERT_THAT(ValidateTrainerConfig(config), IsOk());
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
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
  ASSERT_THAT(again, IsOk());
  EXPECT_DOUBLE_EQ(Recall(*again, "warm", 50) + Recall(*again, "cold", 50), best);
}

TEST_F(SharedModelTest, TwoThreadsTrain) {
  const testing::TrainedModel& model = *model_;
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_threads(2);
  config.mutable_training()->set_epochs(4);
  absl::StatusOr<TrainingReport> report = Train(config, model.data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
  absl::StatusOr<std::vector<EvalResult>> popularity = EvaluatePopularity(model.data, {10, 50});
  EXPECT_GT(Recall(report->final_eval, "warm", 10), 1.3 * Recall(*popularity, "warm", 10));
}

TEST_F(SharedModelTest, MetricsFileAndPlot) {
  const testing::TrainedModel& model = *model_;
  ScopedTempDir dir;  // the outputs
  v1::TrainerConfig config = model.config;
  config.mutable_training()->set_epochs(3);
  config.mutable_training()->set_eval_every_epochs(1);
  TrainOptions options;
  options.metrics_path = dir.Join("metrics.jsonl");
  absl::StatusOr<TrainingReport> report = Train(config, model.data, options);
  ASSERT_THAT(report, IsOk());
  absl::StatusOr<std::string> metrics = ReadFile(options.metrics_path);
  ASSERT_THAT(metrics, IsOk());
  EXPECT_EQ(std::count(metrics->begin(), metrics->end(), '\n'), 3);
  EXPECT_NE(metrics->find("{\"epoch\":3,\"loss\":"), std::string::npos) << *metrics;
  EXPECT_NE(metrics->find("\"warm\":{\"users\":"), std::string::npos);
  ASSERT_THAT(CheckPlotterAvailable(), IsOk());
  ASSERT_THAT(RenderTrainingPlot(report->history, 50, dir.Join("curves.png")), IsOk());
  absl::StatusOr<std::string> png = ReadFile(dir.Join("curves.png"));
  ASSERT_THAT(png, IsOk());
  EXPECT_EQ(png->substr(0, 4), "\x89PNG");
}

}  // namespace
// Interactions alone are enough for derived features: a users block with only a KIND_HISTORY
// feature needs no table (every user of the interactions gets their history).
TEST(TrainerFeaturesTest, AHistoryNeedsNoUsersTable) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("events.csv"),
                     "user,item,ts\nu1,a,30\nu1,b,10\nu1,c,20\nu1,d,40\nu2,a,5\nu2,c,6\n");
  v1::TrainerConfig config;
  ASSERT_NO_FATAL_FAILURE(
      HistoryConfig(R"pb(features { name: "history" kind: KIND_HISTORY embedding_dim: 4 history_length: 2 })pb", 1, &config));
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
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
  age->set_kind(v1::FeatureSpec::KIND_NUMERIC);
  age->mutable_column()->set_name("age");
  EXPECT_NE(ValidateTrainerConfig(with_column).ToString().find("data.users.table.path: must be set"), std::string::npos)
      << ValidateTrainerConfig(with_column);
}

}  // namespace twotower
