// Bundle round trip, atomic write, and rejection of every kind of damaged bundle.
#include <filesystem>
#include <fstream>

#include "bundle/bundle.h"
#include "gtest/gtest.h"
#include "tests/trained_model.h"
#include "util/file.h"
#include "util/text_proto.h"

namespace twotower {
namespace {

using testing::ScopedTempDir;

class BundleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new ScopedTempDir();
    model_ = new testing::TrainedModel(testing::TrainSynthetic(*data_dir_, 2));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete data_dir_;
  }
  std::string WriteFresh() {
    const std::string path = out_.Join("bundle");
    EXPECT_TRUE(WriteBundle(model_->report.bundle, path).ok());
    return path;
  }
  static ScopedTempDir* data_dir_;
  static testing::TrainedModel* model_;
  ScopedTempDir out_;
};
ScopedTempDir* BundleTest::data_dir_ = nullptr;
testing::TrainedModel* BundleTest::model_ = nullptr;

TEST_F(BundleTest, RoundTripKeepsEverything) {
  const Bundle& original = model_->report.bundle;
  const std::string path = WriteFresh();
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->model_version(), original.model_version());
  EXPECT_EQ(read->manifest.format_version(), kBundleFormatVersion);
  EXPECT_EQ(read->manifest.item_count(), static_cast<int64_t>(original.items.ids.size()));
  EXPECT_EQ(read->manifest.files_size(), 5);
  EXPECT_EQ(read->items.ids, original.items.ids);
  EXPECT_EQ(read->users.ids, original.users.ids);
  EXPECT_EQ(read->item_vectors, original.item_vectors);
  EXPECT_EQ(read->users.rows.indices(), original.users.rows.indices());
  EXPECT_EQ(read->users.rows.numeric(), original.users.rows.numeric());
  for (size_t f = 0; f < original.user.tower.embeddings().size(); ++f) {
    EXPECT_EQ(read->user.tower.embeddings()[f].weights, original.user.tower.embeddings()[f].weights);
  }
  for (size_t l = 0; l < original.item.tower.layers().size(); ++l) {
    EXPECT_EQ(read->item.tower.layers()[l].weights, original.item.tower.layers()[l].weights);
  }
  EXPECT_EQ(read->user.encoder.ids().tokens(), original.user.encoder.ids().tokens());
  // The read model computes the same user vectors.
  const std::vector<float> a = original.user.tower.EmbedAll(original.users.rows);
  const std::vector<float> b = read->user.tower.EmbedAll(read->users.rows);
  EXPECT_EQ(a, b);
  // No temp directory left behind.
  int entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(out_.path())) {
    (void)entry;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(BundleTest, RefusesToOverwrite) {
  const std::string path = WriteFresh();
  EXPECT_EQ(WriteBundle(model_->report.bundle, path).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(BundleTest, CorruptFileIsDataLoss) {
  const std::string path = WriteFresh();
  std::fstream f(path + "/item_tower.pb", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(100);
  f.put('\x7f');
  f.close();
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("item_tower.pb: checksum mismatch"), std::string::npos);
}

TEST_F(BundleTest, MissingFileAndMissingManifestAreErrors) {
  const std::string path = WriteFresh();
  std::filesystem::remove(path + "/users.pb");
  EXPECT_EQ(ReadBundle(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ReadBundle(out_.Join("nothing-here")).ok());
}

TEST_F(BundleTest, OtherFormatVersionIsRefused) {
  const std::string path = WriteFresh();
  v1::BundleManifest manifest;
  ASSERT_TRUE(ReadTextProtoFile(path + "/MANIFEST", &manifest).ok());
  manifest.set_format_version(kBundleFormatVersion + 1);
  ASSERT_TRUE(WriteFileDurably(path + "/MANIFEST", ToTextProto(manifest)).ok());
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition) << read.status();
}

TEST_F(BundleTest, ItemVectorsFromAnotherModelAreRefused) {
  // Same shapes, different item tower weights: the sanity forward pass must notice that
  // the stored item embeddings (the index) do not belong to this item tower.
  Bundle tampered = model_->report.bundle;
  for (float& w : tampered.item.tower.layers().back().bias) w += 0.5f;
  const std::string path = out_.Join("tampered");
  ASSERT_TRUE(WriteBundle(tampered, path).ok());  // checksums are valid for the new files
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("sanity forward pass"), std::string::npos) << read.status();
}

TEST_F(BundleTest, LatestSymlinkIsReplacedAtomically) {
  const std::string link = out_.Join("latest");
  ASSERT_TRUE(UpdateSymlink("v1", link).ok());
  ASSERT_TRUE(UpdateSymlink("v2", link).ok());
  EXPECT_EQ(std::filesystem::read_symlink(link).string(), "v2");
}

}  // namespace
}  // namespace twotower
