// Config loading: the shipped configs are valid; every kind of mistake is a clear error.
#include "trainer/config.h"

#include <sys/stat.h>

#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "trainer/config.h"
#include "util/config_enums.h"
#include "util/text_proto.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using testing::ScopedTempDir;
using testing::SourceDir;
using testing::WriteText;

TEST(ConfigTest, ShippedConfigsAreValid) {
  for (const char* name : {"synthetic.textproto", "ml100k.textproto", "ml100k_raw.textproto"}) {
    absl::StatusOr<v1::TrainerConfig> config = LoadTrainerConfig(SourceDir() + "/configs/" + name);
    EXPECT_THAT(config, IsOk());
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
  EXPECT_THAT(ParseTextProto(kMinimal, "minimal", &config), IsOk());
  ApplyDefaults(&config);
  return config;
}

// An unset enum field (its *_UNSPECIFIED) stands for the default config.proto documents;
// a value that is set stands for itself.
TEST(ConfigEnumsTest, UnsetMeansTheDocumentedDefault) {
  v1::TableSpec table;
  EXPECT_EQ(ResolvedFormat(table), v1::TableSpec::FORMAT_AUTO);
  EXPECT_EQ(ResolvedEncoding(table), v1::TableSpec::ENCODING_UTF8);
  table.set_format(v1::TableSpec::FORMAT_TSV);
  table.set_encoding(v1::TableSpec::ENCODING_LATIN1);
  EXPECT_EQ(ResolvedFormat(table), v1::TableSpec::FORMAT_TSV);
  EXPECT_EQ(ResolvedEncoding(table), v1::TableSpec::ENCODING_LATIN1);

  v1::FeatureSpec feature;
  EXPECT_EQ(ResolvedPooling(feature), v1::FeatureSpec::POOLING_MEAN);
  EXPECT_EQ(ResolvedDerive(feature), v1::FeatureSpec::DERIVE_NONE);
  EXPECT_EQ(ResolvedTransform(feature), v1::FeatureSpec::TRANSFORM_STANDARDIZE);
  EXPECT_EQ(ResolvedHistoryContext(feature), v1::FeatureSpec::HISTORY_CONTEXT_LEAVE_ONE_OUT);
  feature.set_pooling(v1::FeatureSpec::POOLING_SUM);
  feature.set_derive(v1::FeatureSpec::DERIVE_YEAR);
  feature.set_transform(v1::FeatureSpec::TRANSFORM_IDENTITY);
  feature.set_history_context(v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING);
  EXPECT_EQ(ResolvedPooling(feature), v1::FeatureSpec::POOLING_SUM);
  EXPECT_EQ(ResolvedDerive(feature), v1::FeatureSpec::DERIVE_YEAR);
  EXPECT_EQ(ResolvedTransform(feature), v1::FeatureSpec::TRANSFORM_IDENTITY);
  EXPECT_EQ(ResolvedHistoryContext(feature), v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING);

  v1::TrainingSpec training;
  EXPECT_EQ(ResolvedOptimizer(training), v1::TrainingSpec::OPTIMIZER_ADAM);
  EXPECT_EQ(ResolvedLearningRateSchedule(training), v1::TrainingSpec::LEARNING_RATE_SCHEDULE_CONSTANT);
  EXPECT_EQ(ResolvedShortHistoryScope(training), v1::TrainingSpec::SHORT_HISTORY_SCOPE_ID_DROPPED);
  EXPECT_EQ(ResolvedShortHistoryFrom(training), v1::TrainingSpec::SHORT_HISTORY_FROM_LAST);
  training.set_optimizer(v1::TrainingSpec::OPTIMIZER_SGD);
  training.set_learning_rate_schedule(v1::TrainingSpec::LEARNING_RATE_SCHEDULE_COSINE_DECAY);
  training.set_short_history_scope(v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL);
  training.set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_ANY);
  EXPECT_EQ(ResolvedOptimizer(training), v1::TrainingSpec::OPTIMIZER_SGD);
  EXPECT_EQ(ResolvedLearningRateSchedule(training), v1::TrainingSpec::LEARNING_RATE_SCHEDULE_COSINE_DECAY);
  EXPECT_EQ(ResolvedShortHistoryScope(training), v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL);
  EXPECT_EQ(ResolvedShortHistoryFrom(training), v1::TrainingSpec::SHORT_HISTORY_FROM_ANY);
}

// The explicit default and the unset field are the same config: both validate, and the
// checks that compare with the default treat them alike (transform on a categorical
// feature is refused only when it is not the default).
TEST(ConfigEnumsTest, ExplicitDefaultsAreAcceptedLikeUnsetOnes) {
  v1::TrainerConfig config = Minimal();
  v1::FeatureSpec* f = config.mutable_data()->mutable_users()->add_features();
  config.mutable_data()->mutable_users()->mutable_table()->set_path("users.csv");
  config.mutable_data()->mutable_users()->mutable_table()->set_header(true);
  config.mutable_data()->mutable_users()->mutable_id_column()->set_name("u");
  f->set_name("segment");
  f->set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
  f->mutable_column()->set_name("segment");
  f->set_embedding_dim(4);
  ASSERT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  f->set_pooling(v1::FeatureSpec::POOLING_MEAN);
  f->set_transform(v1::FeatureSpec::TRANSFORM_STANDARDIZE);
  f->set_derive(v1::FeatureSpec::DERIVE_NONE);
  f->set_history_context(v1::FeatureSpec::HISTORY_CONTEXT_LEAVE_ONE_OUT);
  config.mutable_data()->mutable_train()->mutable_table()->set_format(v1::TableSpec::FORMAT_AUTO);
  config.mutable_data()->mutable_train()->mutable_table()->set_encoding(v1::TableSpec::ENCODING_UTF8);
  config.mutable_training()->set_optimizer(v1::TrainingSpec::OPTIMIZER_ADAM);
  config.mutable_training()->set_learning_rate_schedule(v1::TrainingSpec::LEARNING_RATE_SCHEDULE_CONSTANT);
  config.mutable_training()->set_short_history_scope(v1::TrainingSpec::SHORT_HISTORY_SCOPE_ID_DROPPED);
  config.mutable_training()->set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_LAST);
  EXPECT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  f->set_transform(v1::FeatureSpec::TRANSFORM_IDENTITY);
  EXPECT_NE(ValidateTrainerConfig(config).message().find("KIND_NUMERIC features only"), std::string::npos);
}

TEST(ConfigTest, DefaultsFillUnsetTrainingSettings) {
  const v1::TrainerConfig config = Minimal();
  EXPECT_THAT(ValidateTrainerConfig(config), IsOk());
  EXPECT_EQ(config.training().objective(), v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX);
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

// An --override entry named like an existing feature or eval set changes that entry; a
// new name is appended.
TEST(ConfigTest, OverrideMergesFeaturesAndEvalSetsByName) {
  absl::StatusOr<v1::TrainerConfig> loaded = LoadTrainerConfig(testing::SourceDir() + "/configs/ml100k.textproto");
  ASSERT_THAT(loaded, IsOk());
  v1::TrainerConfig config = *loaded;
  const int user_features = config.data().users().features_size();
  const int evals = config.data().eval_size();
  ASSERT_THAT(ApplyOverride(R"pb(data {
                                   users {
                                     features { name: "history" history_length: 50 }
                                     features {
                                       name: "extra"
                                       kind: KIND_CATEGORICAL
                                       column { index: 5 }
                                       embedding_dim: 4
                                     }
                                   }
                                   eval {
                                     name: "cold"
                                     interactions { table { path: "other.tsv" } }
                                   }
                                 })pb",
                            &config),
              IsOk());
  ASSERT_EQ(config.data().users().features_size(), user_features + 1);
  const auto feature = [&](const std::string& name) {
    for (const v1::FeatureSpec& f : config.data().users().features()) {
      if (f.name() == name) return f;
    }
    ADD_FAILURE() << "no feature " << name;
    return v1::FeatureSpec();
  };
  EXPECT_EQ(feature("history").history_length(), 50);
  EXPECT_EQ(feature("history").kind(), v1::FeatureSpec::KIND_HISTORY);  // the rest kept
  EXPECT_EQ(feature("history").pooling(), v1::FeatureSpec::POOLING_ATTENTION);
  EXPECT_EQ(config.data().users().features(user_features).name(), "extra");
  ASSERT_EQ(config.data().eval_size(), evals);
  for (const v1::EvalSetSpec& eval : config.data().eval()) {
    if (eval.name() == "cold") {
      EXPECT_EQ(eval.interactions().table().path(), "other.tsv");
    }
  }
  EXPECT_THAT(ValidateTrainerConfig(config), IsOk());
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
         c->mutable_training()->set_objective(v1::TrainingSpec::OBJECTIVE_POINTWISE);
         c->mutable_training()->set_num_negatives(0);
       }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) { c->mutable_training()->set_cold_user_balance(-1); }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) { c->mutable_training()->set_cold_user_balance(4.5f); }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_objective(v1::TrainingSpec::OBJECTIVE_POINTWISE);
         c->mutable_training()->set_num_negatives(3);
         c->mutable_training()->set_user_id_dropout(0.3f);
         c->mutable_training()->set_cold_user_balance(1);
       }},
      {"training.cold_user_balance", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_objective(v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX);
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
         f->set_kind(v1::FeatureSpec::KIND_CATEGORICAL);  // no embedding_dim
         f->mutable_column()->set_index(1);
       }},
      {"duplicate feature name", [](v1::TrainerConfig* c) {
         v1::FeatureTableSpec* users = c->mutable_data()->mutable_users();
         users->mutable_table()->set_path("users.csv");
         users->mutable_id_column()->set_index(0);
         for (int i = 0; i < 2; ++i) {
           v1::FeatureSpec* f = users->add_features();
           f->set_name("age");
           f->set_kind(v1::FeatureSpec::KIND_NUMERIC);
           f->mutable_column()->set_index(1);
         }
       }},
      {"flag_columns is for KIND_MULTI_HOT only", [](v1::TrainerConfig* c) {
         v1::FeatureTableSpec* items = c->mutable_data()->mutable_items();
         items->mutable_table()->set_path("items.csv");
         items->mutable_id_column()->set_index(0);
         v1::FeatureSpec* f = items->add_features();
         f->set_name("g");
         f->set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
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

// A feature of `kind` on the users' table of `config`, for the size cases below.
v1::FeatureSpec* AddUserFeature(v1::TrainerConfig* c, v1::FeatureSpec::Kind kind) {
  v1::FeatureTableSpec* users = c->mutable_data()->mutable_users();
  users->mutable_table()->set_path("users.csv");
  users->mutable_id_column()->set_index(0);
  v1::FeatureSpec* f = users->add_features();
  f->set_name(absl::StrCat("f", users->features_size()));
  f->set_kind(kind);
  if (kind != v1::FeatureSpec::KIND_HISTORY) f->mutable_column()->set_index(1);
  if (kind != v1::FeatureSpec::KIND_NUMERIC) f->set_embedding_dim(8);
  return f;
}

// A value this build does not know (a binary config from a newer build) is an error
// naming the field, for every enum that has a default and so is read through Resolved*.
TEST(ConfigEnumsTest, UnknownValuesAreRefusedByName) {
  struct Case {
    const char* field;
    void (*mutate)(v1::TrainerConfig*);
  };
  const Case cases[] = {
      {"data.train.table.format",
       [](v1::TrainerConfig* c) {
         c->mutable_data()->mutable_train()->mutable_table()->set_format(static_cast<v1::TableSpec::Format>(99));
       }},
      {"data.train.table.encoding",
       [](v1::TrainerConfig* c) {
         c->mutable_data()->mutable_train()->mutable_table()->set_encoding(static_cast<v1::TableSpec::Encoding>(99));
       }},
      {"unknown derive",
       [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_CATEGORICAL)->set_derive(static_cast<v1::FeatureSpec::Derive>(99));
       }},
      {"unknown transform",
       [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_NUMERIC)->set_transform(static_cast<v1::FeatureSpec::Transform>(99));
       }},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = Minimal();
    c.mutate(&config);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field << ": " << status;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status;
  }
}

// Every size the trainer allocates from is bounded: a huge one is an error naming the
// field, not a std::bad_alloc after loading the data.
TEST(ConfigTest, SizesAreBoundedAndTheErrorNamesTheField) {
  struct Case {
    const char* field;
    void (*mutate)(v1::TrainerConfig*);
  };
  const Case cases[] = {
      {"user_tower.id_embedding_dim", [](v1::TrainerConfig* c) { c->mutable_user_tower()->set_id_embedding_dim(2000000000); }},
      {"item_tower.id_embedding_dim", [](v1::TrainerConfig* c) { c->mutable_item_tower()->set_id_embedding_dim(kMaxEmbeddingDim + 1); }},
      {"user_tower.hidden_dims", [](v1::TrainerConfig* c) { c->mutable_user_tower()->add_hidden_dims(1 << 30); }},
      {"user_tower.hidden_dims", [](v1::TrainerConfig* c) {
         for (int i = 0; i <= kMaxHiddenLayers; ++i) c->mutable_user_tower()->add_hidden_dims(8);
       }},
      {"item_tower.hidden_dims", [](v1::TrainerConfig* c) {  // 3 x 16384^2 weights: over 2 GiB
         for (int i = 0; i < 3; ++i) c->mutable_item_tower()->add_hidden_dims(kMaxLayerWidth);
       }},
      {"user_tower.output_dim", [](v1::TrainerConfig* c) {
         c->mutable_user_tower()->set_output_dim(kMaxOutputDim + 1);
         c->mutable_item_tower()->set_output_dim(kMaxOutputDim + 1);
       }},
      {"user_tower", [](v1::TrainerConfig* c) {  // input width: 100 x 4096
         for (int i = 0; i < 100; ++i) AddUserFeature(c, v1::FeatureSpec::KIND_CATEGORICAL)->set_embedding_dim(kMaxEmbeddingDim);
       }},
      {"data.users.features[0] (\"f1\"): embedding_dim", [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_CATEGORICAL)->set_embedding_dim(1 << 20);
       }},
      {"hash_buckets must be in", [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_MULTI_HOT)->set_hash_buckets(2000000000);
       }},
      {"hash_buckets x embedding_dim", [](v1::TrainerConfig* c) {
         v1::FeatureSpec* f = AddUserFeature(c, v1::FeatureSpec::KIND_CATEGORICAL);
         f->set_hash_buckets(kMaxHashBuckets);
         f->set_embedding_dim(64);
       }},
      {"quantile_buckets", [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_BUCKETIZED)->set_quantile_buckets(2000000000);
       }},
      {"boundaries: at most", [](v1::TrainerConfig* c) {
         v1::FeatureSpec* f = AddUserFeature(c, v1::FeatureSpec::KIND_BUCKETIZED);
         for (int b = 0; b <= kMaxBuckets; ++b) f->add_boundaries(b);
       }},
      {"history_length", [](v1::TrainerConfig* c) {
         AddUserFeature(c, v1::FeatureSpec::KIND_HISTORY)->set_history_length(2000000000);
       }},
      {"(\"f1\"): pooling_heads must be in 0..16", [](v1::TrainerConfig* c) {
         v1::FeatureSpec* f = AddUserFeature(c, v1::FeatureSpec::KIND_HISTORY);
         f->set_pooling(v1::FeatureSpec::POOLING_ATTENTION);
         f->set_pooling_heads(kMaxPoolingHeads + 1);
       }},
      {"(\"f1\"): pooling_heads must be in 0..16", [](v1::TrainerConfig* c) {
         v1::FeatureSpec* f = AddUserFeature(c, v1::FeatureSpec::KIND_HISTORY);
         f->set_pooling(v1::FeatureSpec::POOLING_ATTENTION);
         f->set_pooling_heads(-1);
       }},
      {"training.batch_size", [](v1::TrainerConfig* c) { c->mutable_training()->set_batch_size(2000000000); }},
      {"training.epochs", [](v1::TrainerConfig* c) { c->mutable_training()->set_epochs(2000000000); }},
      {"training.eval_k", [](v1::TrainerConfig* c) { c->mutable_training()->add_eval_k(2000000000); }},
      {"training.hard_negative_pool", [](v1::TrainerConfig* c) { c->mutable_training()->set_hard_negative_pool(1 << 30); }},
      {"training.num_negatives", [](v1::TrainerConfig* c) {  // 16384 x 10001 negatives a step
         c->mutable_training()->set_objective(v1::TrainingSpec::OBJECTIVE_SAMPLED_SOFTMAX);
         c->mutable_training()->set_batch_size(kMaxBatchSize);
         c->mutable_training()->set_num_negatives(10000);
       }},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = Minimal();
    c.mutate(&config);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << c.field << ": " << status;
  }
  // The bounds themselves are allowed.
  v1::TrainerConfig config = Minimal();
  config.mutable_user_tower()->set_id_embedding_dim(kMaxEmbeddingDim);
  config.mutable_user_tower()->add_hidden_dims(kMaxLayerWidth);
  config.mutable_training()->set_batch_size(kMaxBatchSize);
  config.mutable_training()->set_epochs(kMaxEpochs);
  v1::FeatureSpec* history = AddUserFeature(&config, v1::FeatureSpec::KIND_HISTORY);
  history->set_pooling(v1::FeatureSpec::POOLING_ATTENTION);
  history->set_pooling_heads(kMaxPoolingHeads);
  EXPECT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
}

// Strings reach the bundle's binary protobufs (feature names) and its text MANIFEST: they
// must be UTF-8, and the whole config must fit the MANIFEST.
TEST(ConfigTest, StringsMustBeUtf8AndTheConfigMustFitTheManifest) {
  v1::TrainerConfig config = Minimal();
  AddUserFeature(&config, v1::FeatureSpec::KIND_CATEGORICAL)->set_name("g\xE9nre");
  absl::Status status = ValidateTrainerConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("config: data.users.features[0].name: not valid UTF-8"), std::string::npos)
      << status;

  config = Minimal();
  for (int i = 0; i < 20; ++i) {  // ~80k boundaries: ~2.5 MB of text
    v1::FeatureSpec* f = AddUserFeature(&config, v1::FeatureSpec::KIND_BUCKETIZED);
    f->set_embedding_dim(1);
    for (int b = 0; b < kMaxBuckets; ++b) f->add_boundaries(b + 0.123456789);
  }
  status = ValidateTrainerConfig(config);
  EXPECT_NE(status.message().find("its text form is"), std::string::npos) << status;
}

TEST(ConfigTest, TheConfigFileIsReadUpToACapAndMayBeAPipe) {
  ScopedTempDir dir;
  WriteText(dir.Join("huge.textproto"), std::string(kMaxConfigBytes + 1, '#'));
  EXPECT_EQ(LoadTrainerConfig(dir.Join("huge.textproto")).status().code(), absl::StatusCode::kOutOfRange);
  // --config <(generate-config): a FIFO, read to its end.
  const std::string fifo = dir.Join("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { WriteText(fifo, kMinimal); });
  absl::StatusOr<v1::TrainerConfig> piped = LoadTrainerConfig(fifo);
  writer.join();
  EXPECT_THAT(piped, IsOk());
}

// An option the feature's kind does not read is an error, not silently ignored.
TEST(ConfigTest, OptionsOfAnotherKindAreRefused) {
  struct Case {
    v1::FeatureSpec::Kind kind;
    const char* option;  // text format, merged into the feature
    const char* message;
  };
  const Case cases[] = {
      {v1::FeatureSpec::KIND_NUMERIC, "hash_buckets: 100", "hash_buckets"},
      {v1::FeatureSpec::KIND_BUCKETIZED, "max_vocabulary_size: 10", "max_vocabulary_size"},
      {v1::FeatureSpec::KIND_CATEGORICAL, "separator: \";\"", "separator"},
      {v1::FeatureSpec::KIND_CATEGORICAL, "boundaries: [1, 2]", "boundaries"},
      {v1::FeatureSpec::KIND_MULTI_HOT, "quantile_buckets: 4", "quantile_buckets"},
      {v1::FeatureSpec::KIND_BUCKETIZED, "transform: TRANSFORM_IDENTITY", "transform"},
      {v1::FeatureSpec::KIND_CATEGORICAL, "default_value: 3", "default_value"},
      {v1::FeatureSpec::KIND_CATEGORICAL, "clip_max: 3", "clip_max"},
      {v1::FeatureSpec::KIND_CATEGORICAL, "prefix_length: 2", "prefix_length"},
      {v1::FeatureSpec::KIND_POPULARITY, "derive: DERIVE_YEAR", "derive"},
      {v1::FeatureSpec::KIND_MULTI_HOT, "pooling: POOLING_ATTENTION", "pooling POOLING_ATTENTION applies to KIND_HISTORY features only"},
      {v1::FeatureSpec::KIND_HISTORY, "pooling_heads: 2", "pooling_heads applies to pooling POOLING_ATTENTION only"},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = Minimal();
    v1::FeatureTableSpec* users = config.mutable_data()->mutable_users();
    users->mutable_table()->set_path("users.csv");
    users->mutable_id_column()->set_index(0);
    v1::FeatureSpec* f = users->add_features();
    ASSERT_THAT(ParseTextProto(c.option, "option", f), IsOk());
    f->set_name("f");
    f->set_kind(c.kind);
    if (c.kind != v1::FeatureSpec::KIND_POPULARITY) f->mutable_column()->set_index(1);
    if (c.kind != v1::FeatureSpec::KIND_NUMERIC && c.kind != v1::FeatureSpec::KIND_POPULARITY) f->set_embedding_dim(4);
    if (c.kind == v1::FeatureSpec::KIND_BUCKETIZED) f->add_boundaries(1);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_FALSE(status.ok()) << c.option;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.option << ": " << status;
  }
  // The same options on their own kinds are fine.
  v1::TrainerConfig config = Minimal();
  v1::DataSpec data;
  ASSERT_THAT(ParseTextProto(R"pb(
    users {
      table { path: "users.csv" } id_column { index: 0 }
      features { name: "a" kind: KIND_CATEGORICAL column { index: 1 } embedding_dim: 4 hash_buckets: 100
                 derive: DERIVE_PREFIX prefix_length: 2 }
      features { name: "b" kind: KIND_MULTI_HOT column { index: 2 } embedding_dim: 4 separator: ";" }
      features { name: "c" kind: KIND_NUMERIC column { index: 3 } transform: TRANSFORM_IDENTITY default_value: 3 clip_max: 9 }
      features { name: "d" kind: KIND_BUCKETIZED column { index: 4 } embedding_dim: 4 quantile_buckets: 4 clip_min: 0 }
    }
  )pb", "data", &data), IsOk());
  *config.mutable_data()->mutable_users() = data.users();
  EXPECT_THAT(ValidateTrainerConfig(config), IsOk());
}

// The new-user options (user_history_dropout, short_history_*) and an eval set's
// request-time history: bad values are refused, naming the field; good ones pass.
TEST(ConfigTest, HistoryDropoutShortHistoriesAndEvalHistoriesAreChecked) {
  const auto with_history = [] {
    v1::TrainerConfig c = Minimal();
    AddUserFeature(&c, v1::FeatureSpec::KIND_HISTORY);
    c.mutable_training()->set_user_id_dropout(0.3f);
    return c;
  };
  struct Case {
    const char* field;
    const char* message;
    void (*mutate)(v1::TrainerConfig*);
  };
  const Case cases[] = {
      {"training.user_history_dropout", "[0, 1)", [](v1::TrainerConfig* c) { c->mutable_training()->set_user_history_dropout(-0.1f); }},
      {"training.user_history_dropout", "[0, 1)", [](v1::TrainerConfig* c) { c->mutable_training()->set_user_history_dropout(1.0f); }},
      {"training.user_history_dropout", "[0, 1)", [](v1::TrainerConfig* c) { c->mutable_training()->set_user_history_dropout(NAN); }},
      {"training.user_history_dropout", "needs a KIND_HISTORY feature", [](v1::TrainerConfig* c) {
         c->mutable_data()->clear_users();
         c->mutable_training()->set_user_history_dropout(0.3f);
       }},
      {"training.short_history_rate", "[0, 1]", [](v1::TrainerConfig* c) { c->mutable_training()->set_short_history_rate(1.5f); }},
      {"training.short_history_rate", "[0, 1]", [](v1::TrainerConfig* c) { c->mutable_training()->set_short_history_rate(-0.5f); }},
      {"training.short_history_rate", "needs a KIND_HISTORY feature", [](v1::TrainerConfig* c) {
         c->mutable_data()->clear_users();
         c->mutable_training()->set_short_history_rate(0.5f);
         c->mutable_training()->set_short_history_scope(v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL);
       }},
      {"training.short_history_rate", "user_history_dropout is set", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_short_history_rate(0.5f);  // scope SHORT_HISTORY_SCOPE_ID_DROPPED: no history there
       }},
      {"training.short_history_rate", "user_id_dropout", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_user_history_dropout(0.3f);
         c->mutable_training()->set_user_id_dropout(0);
         c->mutable_training()->set_short_history_rate(0.5f);
       }},
      {"training.short_history_max_length", "must be in 1..", [](v1::TrainerConfig* c) { c->mutable_training()->set_short_history_max_length(-2); }},
      {"training.short_history_max_length", "must be in 1..", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_short_history_max_length(kMaxShortHistoryLength + 1);
       }},
      {"training.short_history_scope", "SHORT_HISTORY_SCOPE_ID_DROPPED or SHORT_HISTORY_SCOPE_ALL", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_short_history_scope(static_cast<v1::TrainingSpec::ShortHistoryScope>(9));
       }},
      {"training.short_history_from", "SHORT_HISTORY_FROM_RANDOM or SHORT_HISTORY_FROM_ANY", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_short_history_from(static_cast<v1::TrainingSpec::ShortHistoryFrom>(5));
       }},
      {"training.short_history_from", "history_context HISTORY_CONTEXT_PRECEDING", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_ANY);  // a HISTORY_CONTEXT_LEAVE_ONE_OUT history
       }},
      {"training.history_gap_max", "must be in 0..", [](v1::TrainerConfig* c) { c->mutable_training()->set_history_gap_max(-1); }},
      {"training.history_gap_max", "must be in 0..", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_history_gap_max(kMaxHistoryLength + 1);
       }},
      {"training.history_gap_max", "history_context HISTORY_CONTEXT_PRECEDING", [](v1::TrainerConfig* c) {
         c->mutable_training()->set_history_gap_max(5);  // a HISTORY_CONTEXT_LEAVE_ONE_OUT history
       }},
      {"data.eval[0].history.item_column", "must be set", [](v1::TrainerConfig* c) {
         v1::EvalSetSpec* eval = c->mutable_data()->add_eval();
         eval->set_name("cold5");
         *eval->mutable_interactions() = c->data().train();
         *eval->mutable_history() = c->data().train();
         eval->mutable_history()->clear_item_column();
       }},
      {"data.eval[0].history.table.path", "must be set", [](v1::TrainerConfig* c) {
         v1::EvalSetSpec* eval = c->mutable_data()->add_eval();
         eval->set_name("cold5");
         *eval->mutable_interactions() = c->data().train();
         eval->mutable_history()->mutable_user_column()->set_index(0);
       }},
      {"data.eval[0].history.label_column", "interactions only", [](v1::TrainerConfig* c) {
         v1::EvalSetSpec* eval = c->mutable_data()->add_eval();
         eval->set_name("cold5");
         *eval->mutable_interactions() = c->data().train();
         *eval->mutable_history() = c->data().train();
         eval->mutable_history()->mutable_label_column()->set_index(2);
       }},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig config = with_history();
    c.mutate(&config);
    ApplyDefaults(&config);
    const absl::Status status = ValidateTrainerConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(absl::StrCat("config: ", c.field, ": ")), std::string::npos)
        << c.field << ": " << status;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.field << ": " << status;
  }
  // Defaults, and good values.
  v1::TrainerConfig config = with_history();
  EXPECT_FALSE(config.training().has_user_history_dropout());  // unset: goes with the id
  EXPECT_EQ(config.training().short_history_max_length(), 5);
  config.mutable_training()->set_user_history_dropout(0);  // set to 0: never dropped
  config.mutable_training()->set_short_history_rate(1);
  v1::EvalSetSpec* eval = config.mutable_data()->add_eval();
  eval->set_name("cold5");
  *eval->mutable_interactions() = config.data().train();
  *eval->mutable_history() = config.data().train();
  EXPECT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  config.mutable_data()->mutable_train()->mutable_timestamp_column()->set_name("t");
  config.mutable_data()->mutable_users()->mutable_features(0)->set_history_context(v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING);
  config.mutable_training()->set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST);
  config.mutable_training()->set_history_gap_max(10);
  EXPECT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  config.mutable_training()->set_short_history_scope(v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL);
  config.mutable_training()->set_user_id_dropout(0);
  config.mutable_training()->clear_user_history_dropout();
  EXPECT_EQ(ValidateTrainerConfig(config), absl::OkStatus());
  // --override sets the history dropout to 0 where a config sets it (explicit presence).
  ASSERT_EQ(ApplyOverride("training { user_history_dropout: 0 }", &config), absl::OkStatus());
  EXPECT_TRUE(config.training().has_user_history_dropout());
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
