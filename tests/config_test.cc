// Config loading: the shipped configs are valid; every kind of mistake is a clear error.
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "trainer/config.h"
#include "util/text_proto.h"

namespace twotower {
namespace {

using testing::ScopedTempDir;
using testing::SourceDir;
using testing::WriteText;

TEST(ConfigTest, ShippedConfigsAreValid) {
  for (const char* name : {"synthetic.textproto", "ml100k.textproto", "ml100k_raw.textproto"}) {
    absl::StatusOr<v1::TrainerConfig> config = LoadTrainerConfig(SourceDir() + "/configs/" + name);
    EXPECT_TRUE(config.ok()) << name << ": " << config.status();
  }
}

constexpr char kMinimal[] = R"pb(
  data {
    train {
      table { path: "train.csv" header: true }
      user_column { name: "u" }
      item_column { name: "i" }
    }
  }
  user_tower { id_embedding_dim: 8 output_dim: 4 }
  item_tower { id_embedding_dim: 8 output_dim: 4 }
)pb";

v1::TrainerConfig Minimal() {
  v1::TrainerConfig config;
  EXPECT_TRUE(ParseTextProto(kMinimal, "minimal", &config).ok());
  ApplyDefaults(&config);
  return config;
}

TEST(ConfigTest, DefaultsFillUnsetTrainingSettings) {
  const v1::TrainerConfig config = Minimal();
  EXPECT_TRUE(ValidateTrainerConfig(config).ok());
  EXPECT_EQ(config.training().objective(), v1::TrainingSpec::IN_BATCH_SOFTMAX);
  EXPECT_EQ(config.training().epochs(), 10);
  EXPECT_EQ(config.training().batch_size(), 256);
  EXPECT_EQ(config.training().eval_k_size(), 3);
}

// An --override can turn cold_user_balance off (0) where the config sets it: the field
// has explicit presence, so a merged 0 is not taken for "unset".
TEST(ConfigTest, OverrideSetsColdUserBalanceToZero) {
  v1::TrainerConfig config;
  config.mutable_training()->set_cold_user_balance(1.0f);
  ASSERT_EQ(ApplyOverride("training { cold_user_balance: 0 }", &config), absl::OkStatus());
  EXPECT_TRUE(config.training().has_cold_user_balance());
  EXPECT_EQ(config.training().cold_user_balance(), 0.0f);
}

// Each mutation must be rejected with a message naming the field.
TEST(ConfigTest, InvalidSettingsNameTheField) {
  struct Case {
    const char* field;
    void (*mutate)(v1::TrainerConfig*);
  };
  const Case cases[] = {
      {"data.train", [](v1::TrainerConfig* c) { c->mutable_data()->clear_train(); }},
      {"data.train.user_column", [](v1::TrainerConfig* c) { c->mutable_data()->mutable_train()->clear_user_column(); }},
      {"item_tower.output_dim", [](v1::TrainerConfig* c) { c->mutable_item_tower()->set_output_dim(5); }},
      {"user_tower.id_embedding_dim", [](v1::TrainerConfig* c) { c->mutable_user_tower()->set_id_embedding_dim(0); }},
      {"user_tower.hidden_dims", [](v1::TrainerConfig* c) { c->mutable_user_tower()->add_hidden_dims(-3); }},
      {"training.batch_size", [](v1::TrainerConfig* c) { c->mutable_training()->set_batch_size(1); }},
      {"training.learning_rate", [](v1::TrainerConfig* c) { c->mutable_training()->set_learning_rate(-1); }},
      {"training.temperature", [](v1::TrainerConfig* c) { c->mutable_training()->set_temperature(-0.1f); }},
      {"training.cold_logq_weight", [](v1::TrainerConfig* c) { c->mutable_training()->set_cold_logq_weight(-1); }},
      {"training.cold_logq_weight", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_logq_correction(true);
         c->mutable_training()->set_logq_weight(0);
         c->mutable_training()->set_cold_logq_weight(2);
       }},
      {"training.num_negatives", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_objective(v1::TrainingSpec::POINTWISE);
         c->mutable_training()->set_num_negatives(0);
       }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) { c->mutable_training()->set_cold_user_balance(-1); }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) { c->mutable_training()->set_cold_user_balance(4.5f); }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_objective(v1::TrainingSpec::POINTWISE);
         c->mutable_training()->set_num_negatives(3);
         c->mutable_training()->set_user_id_dropout(0.3f);
         c->mutable_training()->set_cold_user_balance(1);
       }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_objective(v1::TrainingSpec::IN_BATCH_SOFTMAX);
         c->mutable_training()->set_user_id_dropout(0);
         c->mutable_training()->set_cold_user_balance(1);
       }},
      {"training.hard_negative_fraction", [](v1::TrainerConfig* c) { c->mutable_training()->set_hard_negative_fraction(0.5f); }},
      {"training.user_id_dropout", [](v1::TrainerConfig* c) { c->mutable_training()->set_user_id_dropout(1.0f); }},
      {"training.selection_k", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_select_best_epoch(true);
         v1::EvalSetSpec* eval = c->mutable_data()->add_eval();
         eval->set_name("val");
         *eval->mutable_interactions() = c->data().train();
         c->mutable_training()->set_selection_k(7);
       }},
      {"data.users.features[0]", [](v1::TrainerConfig* c) {
         v1::FeatureTableSpec* users = c->mutable_data()->mutable_users();
         users->mutable_table()->set_path("users.csv");
         users->mutable_id_column()->set_index(0);
         v1::FeatureSpec* f = users->add_features();
         f->set_name("age");
         f->set_kind(v1::FeatureSpec::CATEGORICAL);  // no embedding_dim
         f->mutable_column()->set_index(1);
       }},
      {"duplicate feature name", [](v1::TrainerConfig* c) {
         v1::FeatureTableSpec* users = c->mutable_data()->mutable_users();
         users->mutable_table()->set_path("users.csv");
         users->mutable_id_column()->set_index(0);
         for (int i = 0; i < 2; ++i) {
           v1::FeatureSpec* f = users->add_features();
           f->set_name("age");
           f->set_kind(v1::FeatureSpec::NUMERIC);
           f->mutable_column()->set_index(1);
         }
       }},
      {"flag_columns is for MULTI_HOT only", [](v1::TrainerConfig* c) {
         v1::FeatureTableSpec* items = c->mutable_data()->mutable_items();
         items->mutable_table()->set_path("items.csv");
         items->mutable_id_column()->set_index(0);
         v1::FeatureSpec* f = items->add_features();
         f->set_name("g");
         f->set_kind(v1::FeatureSpec::CATEGORICAL);
         f->set_embedding_dim(4);
         f->add_flag_columns()->set_index(2);
       }},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = Minimal();
    c.mutate(&config);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_FALSE(status.ok()) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << c.field << ": " << status;
  }
}

// An option the feature's kind does not read is an error, not silently ignored.
TEST(ConfigTest, OptionsOfAnotherKindAreRefused) {
  struct Case {
    v1::FeatureSpec::Kind kind;
    const char* option;  // text format, merged into the feature
    const char* message;
  };
  const Case cases[] = {
      {v1::FeatureSpec::NUMERIC, "hash_buckets: 100", "hash_buckets"},
      {v1::FeatureSpec::BUCKETIZED, "max_vocabulary_size: 10", "max_vocabulary_size"},
      {v1::FeatureSpec::CATEGORICAL, "separator: \";\"", "separator"},
      {v1::FeatureSpec::CATEGORICAL, "boundaries: [1, 2]", "boundaries"},
      {v1::FeatureSpec::MULTI_HOT, "quantile_buckets: 4", "quantile_buckets"},
      {v1::FeatureSpec::BUCKETIZED, "transform: IDENTITY", "transform"},
      {v1::FeatureSpec::CATEGORICAL, "default_value: 3", "default_value"},
      {v1::FeatureSpec::CATEGORICAL, "clip_max: 3", "clip_max"},
      {v1::FeatureSpec::CATEGORICAL, "prefix_length: 2", "prefix_length"},
      {v1::FeatureSpec::POPULARITY, "derive: YEAR", "derive"},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = Minimal();
    v1::FeatureTableSpec* users = config.mutable_data()->mutable_users();
    users->mutable_table()->set_path("users.csv");
    users->mutable_id_column()->set_index(0);
    v1::FeatureSpec* f = users->add_features();
    ASSERT_TRUE(ParseTextProto(c.option, "option", f).ok()) << c.option;
    f->set_name("f");
    f->set_kind(c.kind);
    if (c.kind != v1::FeatureSpec::POPULARITY) f->mutable_column()->set_index(1);
    if (c.kind != v1::FeatureSpec::NUMERIC && c.kind != v1::FeatureSpec::POPULARITY) f->set_embedding_dim(4);
    if (c.kind == v1::FeatureSpec::BUCKETIZED) f->add_boundaries(1);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_FALSE(status.ok()) << c.option;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.option << ": " << status;
  }
  // The same options on their own kinds are fine.
  v1::TrainerConfig config = Minimal();
  v1::DataSpec data;
  ASSERT_TRUE(ParseTextProto(R"pb(
    users {
      table { path: "users.csv" } id_column { index: 0 }
      features { name: "a" kind: CATEGORICAL column { index: 1 } embedding_dim: 4 hash_buckets: 100
                 derive: PREFIX prefix_length: 2 }
      features { name: "b" kind: MULTI_HOT column { index: 2 } embedding_dim: 4 separator: ";" }
      features { name: "c" kind: NUMERIC column { index: 3 } transform: IDENTITY default_value: 3 clip_max: 9 }
      features { name: "d" kind: BUCKETIZED column { index: 4 } embedding_dim: 4 quantile_buckets: 4 clip_min: 0 }
    }
  )pb", "data", &data).ok());
  *config.mutable_data()->mutable_users() = data.users();
  EXPECT_TRUE(ValidateTrainerConfig(config).ok()) << ValidateTrainerConfig(config).ToString();
}

TEST(ConfigTest, SyntaxErrorsGiveFileLineAndColumn) {
  ScopedTempDir dir;
  WriteText(dir.Join("bad.textproto"), "data {\n  train {\n    tabel { path: \"x\" }\n");
  absl::StatusOr<v1::TrainerConfig> config = LoadTrainerConfig(dir.Join("bad.textproto"));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("bad.textproto:3:"), std::string::npos) << config.status();
  EXPECT_NE(config.status().message().find("tabel"), std::string::npos) << config.status();
  EXPECT_EQ(LoadTrainerConfig(dir.Join("missing.textproto")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace twotower
