// A small model trained on the synthetic data, and the data's options and config, shared by
// the tests that need them.
#ifndef TWOTOWER_TESTS_TRAINED_MODEL_H_
#define TWOTOWER_TESTS_TRAINED_MODEL_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "dataset/synthetic.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "trainer/config.h"
#include "trainer/trainer.h"
#include "trainer/training_data.h"
#include "util/status_macros.h"
#include "util/text_proto.h"

namespace twotower::testing {

struct TrainedModel {
  v1::TrainerConfig config;
  TrainingData data;
  TrainingReport report;
};

// configs/synthetic.textproto: the config of the data WriteSyntheticDataset writes.
inline absl::StatusOr<v1::TrainerConfig> SyntheticConfig() {
  return LoadTrainerConfig(SourceDir() + "/configs/synthetic.textproto");
}

// SyntheticConfig() with its user features replaced by one, `feature` (a FeatureSpec in
// text format), e.g. a history: a user tower that reads only that.
inline absl::StatusOr<v1::TrainerConfig> SyntheticConfigWithUserFeature(absl::string_view feature) {
  ASSIGN_OR_RETURN(v1::TrainerConfig config, SyntheticConfig());
  v1::FeatureTableSpec* users = config.mutable_data()->mutable_users();
  users->clear_features();
  RETURN_IF_ERROR(ParseTextProto(feature, "user feature", users->add_features()));
  return config;
}

// The synthetic data the tests train on: 600 users, 300 items, the rest as defaulted.
inline SyntheticOptions TrainingSyntheticOptions() {
  SyntheticOptions options;
  options.users = 600;
  options.items = 300;
  return options;
}

// Synthetic data (TrainingSyntheticOptions) in `dir`, trained per configs/synthetic.textproto.
inline TrainedModel TrainSynthetic(const ScopedTempDir& dir, int epochs, uint64_t seed = 1) {
  TrainedModel model;
  EXPECT_TRUE(WriteSyntheticDataset(TrainingSyntheticOptions(), dir.path()).ok());
  absl::StatusOr<v1::TrainerConfig> config = SyntheticConfig();
  EXPECT_TRUE(config.ok()) << config.status();
  model.config = *config;
  model.config.mutable_training()->set_epochs(epochs);
  model.config.mutable_training()->set_seed(seed);
  absl::StatusOr<TrainingData> data = LoadTrainingData(model.config, dir.path(), stderr);
  EXPECT_TRUE(data.ok()) << data.status();
  model.data = *std::move(data);
  absl::StatusOr<TrainingReport> report = Train(model.config, model.data, TrainOptions{});
  EXPECT_TRUE(report.ok()) << report.status();
  model.report = *std::move(report);
  return model;
}

// A fixture whose test suite shares one model: TrainSynthetic(*data_dir_, kEpochs) in
// SetUpTestSuite, freed with its data directory in TearDownTestSuite.
template <int kEpochs>
class TrainedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = std::make_unique<ScopedTempDir>();
    model_ = std::make_unique<TrainedModel>(TrainSynthetic(*data_dir_, kEpochs));
  }
  static void TearDownTestSuite() {
    model_.reset();
    data_dir_.reset();
  }

  static inline std::unique_ptr<ScopedTempDir> data_dir_;
  static inline std::unique_ptr<TrainedModel> model_;
};

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_TRAINED_MODEL_H_
