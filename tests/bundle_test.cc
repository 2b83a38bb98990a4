// Bundle round trip, atomic write, and rejection of every kind of damaged bundle.
#include "bundle/bundle.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <ranges>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "index/catalogue.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "tests/trained_model.h"
#include "util/file.h"
#include "util/sha256.h"
#include "util/text_proto.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using testing::ScopedTempDir;

class BundleTest : public testing::TrainedModelTest<2> {
 protected:
  std::string WriteFresh() {
    const std::string path = out_.Join("bundle");
    EXPECT_THAT(WriteBundle(model_->report.bundle, path), IsOk());
    return path;
  }
  // Edits the MANIFEST of the bundle at `path` in place.
  static void EditManifest(const std::string& path,
                           const std::function<void(v1::BundleManifest*)>& edit) {
    v1::BundleManifest manifest;
    ASSERT_THAT(ReadTextProtoFile(path + "/MANIFEST", &manifest), IsOk());
    edit(&manifest);
    ASSERT_THAT(WriteFileDurably(path + "/MANIFEST", ToTextProto(manifest)), IsOk());
  }
  // Replaces file `name` of the bundle at `path`, with a MANIFEST entry (size, checksum)
  // that matches: only the checks past the checksums can refuse it.
  static void ReplaceFile(const std::string& path, const std::string& name,
                          const std::string& contents) {
    ASSERT_THAT(WriteFileDurably(path + "/" + name, contents), IsOk());
    EditManifest(path, [&](v1::BundleManifest* manifest) {
      for (v1::BundleFile& file : *manifest->mutable_files()) {
        if (file.name() != name) continue;
        file.set_bytes(static_cast<int64_t>(contents.size()));
        file.set_sha256(Sha256Hex(contents));
      }
    });
  }
  // Rewrites the stored item vectors of the bundle at `path` with `edit`.
  static void EditItemVectors(const std::string& path,
                              const std::function<void(std::vector<float>*, int dim)>& edit) {
    v1::ItemEmbeddings embeddings;
    ASSERT_TRUE(embeddings.ParseFromString(ReadFile(path + "/item_embeddings.pb").value()));
    std::vector<float> vectors(embeddings.vectors().size() / sizeof(float));
    std::memcpy(vectors.data(), embeddings.vectors().data(), embeddings.vectors().size());
    edit(&vectors, embeddings.dim());
    embeddings.set_vectors(std::string(reinterpret_cast<const char*>(vectors.data()),
                                       vectors.size() * sizeof(float)));
    ReplaceFile(path, "item_embeddings.pb", embeddings.SerializeAsString());
  }
  // Names in the output directory (nothing half-written may stay there).
  std::vector<std::string> Entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(out_.path())) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }
  static std::string ItemId(int row) { return model_->report.bundle.items.ids[row]; }

  ScopedTempDir out_;
};

TEST_F(BundleTest, RoundTripKeepsEverything) {
  const Bundle& original = model_->report.bundle;
  const std::string path = WriteFresh();
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->model_version(), original.model_version());
  EXPECT_EQ(read->manifest.format_version(), kBundleFormatVersion);
  EXPECT_EQ(read->manifest.item_count(), static_cast<int64_t>(original.items.ids.size()));
  EXPECT_EQ(read->manifest.files_size(), 6);
  EXPECT_EQ(read->items.ids, original.items.ids);
  EXPECT_EQ(read->users.ids, original.users.ids);
  EXPECT_EQ(read->item_vectors, original.item_vectors);
  EXPECT_EQ(read->users.rows.indices(), original.users.rows.indices());
  EXPECT_EQ(read->users.rows.numeric(), original.users.rows.numeric());
  for (size_t f = 0; f < original.user.tower.embeddings().size(); ++f) {
    EXPECT_TRUE(std::ranges::equal(read->user.tower.embeddings()[f].values(),
                                   original.user.tower.embeddings()[f].values()));
  }
  for (size_t l = 0; l < original.item.tower.layers().size(); ++l) {
    EXPECT_EQ(read->item.tower.layers()[l].weights, original.item.tower.layers()[l].weights);
  }
  EXPECT_EQ(read->user.encoder.ids().tokens(), original.user.encoder.ids().tokens());
  // Each user's training items, as the trainer counted them.
  ASSERT_EQ(read->seen_items.users(), static_cast<int64_t>(original.users.ids.size()));
  int64_t interactions = 0;
  for (size_t u = 0; u < original.users.ids.size(); ++u) {
    const absl::flat_hash_set<int32_t>& trained = model_->data.train_items_of_user[u];
    std::vector<int32_t> want(trained.begin(), trained.end()), got;
    std::sort(want.begin(), want.end());
    read->seen_items.AppendRowsOf(static_cast<int64_t>(u), &got);
    EXPECT_EQ(got, want) << "user row " << u;
    interactions += static_cast<int64_t>(got.size());
  }
  EXPECT_GT(interactions, 0);
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
  ASSERT_THAT(ReadTextProtoFile(path + "/MANIFEST", &manifest), IsOk());
  manifest.set_format_version(kBundleFormatVersion + 1);
  ASSERT_THAT(WriteFileDurably(path + "/MANIFEST", ToTextProto(manifest)), IsOk());
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition) << read.status();
}

// A MANIFEST of another format version need not parse with this build's messages (format
// 1 spelled the config's enum values unprefixed: `kind: CATEGORICAL`); it is refused by
// its version, with what to do, not with a parse error.
TEST_F(BundleTest, OlderFormatIsRefusedByItsVersionBeforeParsing) {
  using ::testing::AllOf;
  using ::testing::HasSubstr;
  using testing::StatusIs;
  const std::string path = WriteFresh();
  v1::BundleManifest manifest;
  ASSERT_TRUE(ReadTextProtoFile(path + "/MANIFEST", &manifest).ok());
  manifest.set_format_version(1);
  std::string text = ToTextProto(manifest);
  ASSERT_NE(text.find("kind: KIND_"), std::string::npos);
  for (size_t at; (at = text.find("kind: KIND_")) != std::string::npos;) text.erase(at + 6, 5);
  ASSERT_FALSE(ParseTextProto(text, "MANIFEST", &manifest).ok());  // as an old MANIFEST
  ASSERT_TRUE(WriteFileDurably(path + "/MANIFEST", text).ok());
  EXPECT_THAT(ReadBundle(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(absl::StrCat("format_version 1, this build reads ", kBundleFormatVersion)),
                             HasSubstr("train the model again"))));
}

TEST_F(BundleTest, ItemVectorsFromAnotherModelAreRefused) {
  // Same shapes, different item tower weights: the sanity forward pass must notice that
  // the stored item embeddings (the index) do not belong to this item tower...
  Bundle tampered = model_->report.bundle;
  for (float& w : tampered.item.tower.layers().back().bias) w += 0.5f;
  const absl::Status written = WriteBundle(tampered, out_.Join("tampered"));
  EXPECT_NE(written.message().find("sanity forward pass"), std::string::npos) << written;
  // ... so WriteBundle does not publish it (nor leave its temp directory behind).
  EXPECT_EQ(Entries(), std::vector<std::string>{});

  // On disk: unit-length, finite vectors, but not this tower's (two components of a
  // sampled row swapped).
  const std::string path = WriteFresh();
  EditItemVectors(path, [](std::vector<float>* v, int) { std::swap((*v)[0], (*v)[1]); });
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("sanity forward pass"), std::string::npos) << read.status();
}

// Not only a sample: every stored vector must be finite and unit-length. Row 7 is not
// among the rows the forward pass samples.
TEST_F(BundleTest, EveryItemVectorIsCheckedFiniteAndUnitLength) {
  constexpr int kRow = 7;
  const struct {
    float value;          // written into component 0 of row kRow
    const char* problem;  // expected in the message
  } cases[] = {
      {NAN, "non-finite"},
      {INFINITY, "non-finite"},
      {1e30f, "L2 norm"},
      {2.0f, "L2 norm"},
  };
  for (const auto& c : cases) {
    ScopedTempDir out;
    const std::string path = out.Join("bundle");
    ASSERT_THAT(WriteBundle(model_->report.bundle, path), IsOk());
    EditItemVectors(path, [&](std::vector<float>* v, int dim) { (*v)[kRow * dim] = c.value; });
    absl::StatusOr<Bundle> read = ReadBundle(path);
    ASSERT_FALSE(read.ok()) << c.value;
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    const std::string expected = absl::StrCat("item \"", ItemId(kRow), "\" (row ", kRow, ")");
    EXPECT_NE(read.status().message().find(expected), std::string::npos) << read.status();
    EXPECT_NE(read.status().message().find(c.problem), std::string::npos) << read.status();
  }
  // A whole row scaled by 0.5: finite, but not L2-normalised.
  const std::string path = WriteFresh();
  EditItemVectors(path, [](std::vector<float>* v, int dim) {
    for (int k = 0; k < dim; ++k) (*v)[kRow * dim + k] *= 0.5f;
  });
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_NE(read.status().message().find("L2 norm 0.5"), std::string::npos) << read.status();
}

// WriteBundle reads what it wrote back before it renames it into place: whatever ReadBundle
// refuses is an error, and nothing is published.
TEST_F(BundleTest, WriteBundleNeverPublishesWhatReadBundleRefuses) {
  const struct {
    const char* what;
    std::function<void(Bundle*)> damage;
    const char* message;
  } cases[] = {
      // protobuf writes a non-UTF-8 string field with only a logged error, and then refuses
      // to parse it.
      {"non-UTF-8 item id", [](Bundle* b) { b->items.ids[3] = "caf\xE9"; }, "not a valid"},
      {"NaN item vector", [](Bundle* b) { b->item_vectors[5] = NAN; }, "non-finite"},
      {"duplicate item id", [](Bundle* b) { b->items.ids[1] = b->items.ids[0]; }, "duplicate id"},
  };
  for (const auto& c : cases) {
    Bundle damaged = model_->report.bundle;
    c.damage(&damaged);
    const std::string path = out_.Join("bundle");
    const absl::Status status = WriteBundle(damaged, path);
    EXPECT_FALSE(status.ok()) << c.what;
    EXPECT_NE(status.message().find("does not read back"), std::string::npos) << c.what << ": " << status;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.what << ": " << status;
    EXPECT_EQ(Entries(), std::vector<std::string>{}) << c.what;
  }
  Bundle renamed = model_->report.bundle;
  renamed.manifest.set_model_version("../../escape");
  EXPECT_EQ(WriteBundle(renamed, out_.Join("bundle")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Entries(), std::vector<std::string>{});
}

TEST_F(BundleTest, ModelVersionMustBeAPlainFileName) {
  for (const std::string& version : {std::string("20261128T230102Z-3fa9c2d1"), std::string("v1.2_rc-3"),
                                    std::string(128, 'a'), NewModelVersion()}) {
    EXPECT_THAT(ValidateModelVersion(version), IsOk());
  }
  for (const std::string& version : {std::string(""), std::string("."), std::string(".."),
                                    std::string("a/b"), std::string("../x"), std::string("a b"),
                                    std::string(129, 'a'), std::string("caf\xC3\xA9"),
                                    std::string("a\0b", 3)}) {
    EXPECT_EQ(ValidateModelVersion(version).code(), absl::StatusCode::kInvalidArgument) << version;
  }
  const std::string path = WriteFresh();
  EditManifest(path, [](v1::BundleManifest* m) { m->set_model_version("../../state/evil"); });
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("model_version"), std::string::npos) << read.status();
}

// The MANIFEST lists exactly the format's files, by plain name: nothing outside the
// bundle directory is ever opened.
TEST_F(BundleTest, ManifestFileNamesMustBeTheFormats) {
  for (const std::string name : {"../../../../dev/zero", "/etc/hostname", "", ".", "..",
                                 "sub/users.pb", "extra.pb", "users.pb"}) {
    ScopedTempDir out;
    const std::string path = out.Join("bundle");
    ASSERT_THAT(WriteBundle(model_->report.bundle, path), IsOk());
    EditManifest(path, [&](v1::BundleManifest* m) {
      v1::BundleFile* file = m->add_files();  // "users.pb": listed twice
      *file = m->files(2);
      file->set_name(name);
    });
    absl::StatusOr<Bundle> read = ReadBundle(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << name << ": " << read.status();
    EXPECT_NE(read.status().message().find("files[6]"), std::string::npos) << read.status();
  }
}

TEST_F(BundleTest, SymlinkedFilesAreRefused) {
  for (const char* name : {"users.pb", "MANIFEST"}) {
    ScopedTempDir out;
    const std::string path = out.Join("bundle");
    ASSERT_THAT(WriteBundle(model_->report.bundle, path), IsOk());
    // The same bytes, but outside the directory, reached through a symlink.
    std::filesystem::rename(path + "/" + name, out.Join(name));
    std::filesystem::create_symlink(out.Join(name), path + "/" + name);
    absl::StatusOr<Bundle> read = ReadBundle(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition) << name;
    EXPECT_NE(read.status().message().find(std::string(name) + ": is a symbolic link"), std::string::npos)
        << read.status();
  }
}

TEST_F(BundleTest, TheBundleDirectoryMayBeASymlink) {
  const std::string path = WriteFresh();
  const std::string latest = out_.Join("latest");
  ASSERT_THAT(UpdateSymlink("bundle", latest), IsOk());
  absl::StatusOr<Bundle> read = ReadBundle(latest);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->model_version(), model_->report.bundle.model_version());
}

TEST_F(BundleTest, FifosAndDevicesAreRefusedWithoutBlocking) {
  for (const char* name : {"MANIFEST", "item_tower.pb"}) {
    ScopedTempDir out;
    const std::string path = out.Join("bundle");
    ASSERT_THAT(WriteBundle(model_->report.bundle, path), IsOk());
    std::filesystem::remove(path + "/" + name);
    ASSERT_EQ(::mkfifo((path + "/" + name).c_str(), 0644), 0);
    // Nobody writes to the FIFO: a blocking open would hang the reload for ever.
    auto pending = std::async(std::launch::async, [&] { return ReadBundle(path).status(); });
    ASSERT_EQ(pending.wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "ReadBundle blocked on a FIFO " << name;
    const absl::Status status = pending.get();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_NE(status.message().find(std::string(name) + ": a FIFO"), std::string::npos) << status;
  }
}

TEST_F(BundleTest, FilesLargerThanDeclaredAreNotRead) {
  const std::string path = WriteFresh();
  {
    std::ofstream grow(path + "/items.pb", std::ios::app | std::ios::binary);
    grow << std::string(1 << 20, 'x');
  }
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("items.pb: larger than the"), std::string::npos) << read.status();
  // A declared size past what one protobuf file can hold.
  EditManifest(path, [](v1::BundleManifest* m) { m->mutable_files(3)->set_bytes(int64_t{1} << 40); });
  EXPECT_EQ(ReadBundle(path).status().code(), absl::StatusCode::kDataLoss);
  // A MANIFEST past its cap (here: a huge comment).
  const std::string manifest = ReadFile(path + "/MANIFEST").value();
  ASSERT_THAT(WriteFileDurably(path + "/MANIFEST", "# " + std::string(kMaxManifestBytes, 'x') + "\n" + manifest),
              IsOk());
  read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("MANIFEST: larger than"), std::string::npos) << read.status();
}

// Widths in the manifest's config that would overflow the tower's int arithmetic are
// refused before any of it (UBSan would flag the overflow).
TEST_F(BundleTest, ImpossibleLayerWidthsInTheManifestAreDataLoss) {
  const std::string path = WriteFresh();
  EditManifest(path, [](v1::BundleManifest* m) {
    m->mutable_config()->mutable_item_tower()->set_id_embedding_dim(2147483647);
    for (v1::FeatureSpec& f : *m->mutable_config()->mutable_data()->mutable_items()->mutable_features()) {
      if (f.embedding_dim() > 0) f.set_embedding_dim(2147483647);
    }
  });
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
}

TEST_F(BundleTest, LatestSymlinkIsReplacedAtomically) {
  const std::string link = out_.Join("latest");
  ASSERT_THAT(UpdateSymlink("v1", link), IsOk());
  ASSERT_THAT(UpdateSymlink("v2", link), IsOk());
  EXPECT_EQ(std::filesystem::read_symlink(link).string(), "v2");
}

// An index of lossy codes (SQ8) keeps no floats: rebuilding from it re-reads the vectors
// from the bundle directory, and only the very file that was loaded (its SHA-256 in the
// MANIFEST loaded): a file changed since is refused, the catalogue unchanged.
TEST_F(BundleTest, RebuildFromLossyCodesRereadsTheVectorsThatWereLoaded) {
  const std::string path = WriteFresh();
  const Bundle& original = model_->report.bundle;
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_THAT(read, IsOk());
  absl::StatusOr<std::shared_ptr<const Catalogue>> codes = Catalogue::Create(*std::move(read), {"SQ8", 0, 0}, path);
  ASSERT_THAT(codes, IsOk());
  EXPECT_TRUE((*codes)->bundle()->item_vectors.empty());
  absl::StatusOr<std::shared_ptr<const Catalogue>> exact = (*codes)->WithIndex(IndexOptions{});
  ASSERT_THAT(exact, IsOk());
  // The same answers as an exact catalogue of the original vectors.
  absl::StatusOr<std::shared_ptr<const Catalogue>> reference = Catalogue::Create(Bundle(original), IndexOptions{});
  ASSERT_THAT(reference, IsOk());
  std::vector<Catalogue::Query> queries(2, Catalogue::Query{25});
  const auto a = (*exact)->Search(original.item_vectors.data(), queries);
  const auto b = (*reference)->Search(original.item_vectors.data(), queries);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  testing::ExpectSameAnswers(*a, *b, &Catalogue::Result::id);
  // Another file in its place (consistent with the MANIFEST on disk, not the one loaded).
  EditItemVectors(path, [](std::vector<float>* vectors, int dim) {
    std::swap_ranges(vectors->begin(), vectors->begin() + dim, vectors->begin() + dim);
  });
  EXPECT_EQ((*codes)->WithIndex(IndexOptions{}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadItemVectors(path, (*codes)->bundle()->manifest).status().code(), absl::StatusCode::kDataLoss);
  // Gone altogether.
  std::filesystem::remove_all(path);
  EXPECT_EQ((*codes)->WithIndex(IndexOptions{}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadItemVectors("", (*codes)->bundle()->manifest).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*codes)->index_options().factory, "SQ8");
}

// embedding_tables.f32: every table of both towers, mapped read-only, not on the heap,
// the same floats as the trainer's; the towers compute the same vectors from it.
TEST_F(BundleTest, EmbeddingTablesAreMemoryMappedFromTheirFile) {
  const Bundle& original = model_->report.bundle;
  const std::string path = WriteFresh();
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_TRUE(read.ok()) << read.status();
  const std::string tables = path + "/" + kBundleTablesFile;
  int64_t end = 0;
  for (const auto& [loaded, trained] : {std::pair(&read->user.tower, &original.user.tower),
                                        std::pair(&read->item.tower, &original.item.tower)}) {
    ASSERT_EQ(loaded->embeddings().size(), trained->embeddings().size());
    for (size_t f = 0; f < loaded->embeddings().size(); ++f) {
      const EmbeddingTable& e = loaded->embeddings()[f];
      EXPECT_TRUE(e.weights.empty()) << f;  // nothing on the heap
      ASSERT_FALSE(e.mapped.empty()) << f;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(e.mapped.data()) % kBundleTableAlignment, 0u) << f;
      EXPECT_TRUE(std::ranges::equal(e.values(), trained->embeddings()[f].values())) << f;
      end = static_cast<int64_t>(e.values().size() * sizeof(float));  // of the last table
    }
  }
  const EmbeddingTable& last = read->item.tower.embeddings().back();
  EXPECT_EQ(static_cast<int64_t>(std::filesystem::file_size(tables)),
            reinterpret_cast<const char*>(last.mapped.data()) -
                reinterpret_cast<const char*>(read->user.tower.embeddings()[0].mapped.data()) + end);
  // The item tower reads the mapped tables: the trainer's vectors, bit for bit.
  EXPECT_EQ(read->item.tower.EmbedAll(read->items.rows), original.item_vectors);
  EXPECT_EQ(read->user.tower.EmbedAll(read->users.rows), original.user.tower.EmbedAll(original.users.rows));
  // A copy of the towers keeps the mapping alive, past the Bundle and the bundle's files
  // (a server keeps serving a model whose directory was deleted).
  const Tower item_tower = read->item.tower;
  read = absl::UnknownError("dropped");
  std::filesystem::remove_all(path);
  EXPECT_EQ(item_tower.EmbedAll(original.items.rows), original.item_vectors);
  // What WriteBundle makes of mapped tables is the same file again.
  absl::StatusOr<Bundle> again = ReadBundle(WriteFresh());
  ASSERT_TRUE(again.ok()) << again.status();
  const std::string copy = out_.Join("copy");
  ASSERT_TRUE(WriteBundle(*again, copy).ok());
  EXPECT_EQ(ReadFile(copy + "/" + kBundleTablesFile).value(), ReadFile(out_.Join("bundle") + "/" + kBundleTablesFile).value());
}

TEST_F(BundleTest, AFlippedBitOrATruncationInTheTablesFileIsDataLossNamingIt) {
  const std::string path = WriteFresh();
  const std::string tables = path + "/" + kBundleTablesFile;
  const std::string good = ReadFile(tables).value();
  const auto refused = [&](const std::string& contents, const std::string& what) {
    ASSERT_TRUE(WriteFileDurably(tables, contents).ok());
    absl::StatusOr<Bundle> read = ReadBundle(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << what << ": " << read.status();
    EXPECT_NE(read.status().message().find(tables), std::string::npos) << what << ": " << read.status();
  };
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  refused(flipped, "a flipped bit");
  refused(good.substr(0, good.size() - 1), "one byte short");
  refused(good.substr(0, good.size() / 2), "half");
  refused("", "empty");
  refused(good + std::string(64, '\0'), "longer than listed");
  std::filesystem::remove(tables);
  EXPECT_EQ(ReadBundle(path).status().code(), absl::StatusCode::kNotFound);
}

// A tables file that checks out against its MANIFEST but does not hold the towers'
// tables where they belong (a bundle written by something else): DATA_LOSS, never a
// read past the mapping.
TEST_F(BundleTest, ATablesFileOfTheWrongLayoutIsDataLoss) {
  const std::string good = [&] {
    const std::string path = WriteFresh();
    return ReadFile(path + "/" + kBundleTablesFile).value();
  }();
  for (const std::string& contents : {good.substr(0, good.size() - 4), good + std::string(64, '\0'), std::string(4, '\0')}) {
    ScopedTempDir out;
    const std::string path = out.Join("bundle");
    ASSERT_TRUE(WriteBundle(model_->report.bundle, path).ok());
    ReplaceFile(path, kBundleTablesFile, contents);
    absl::StatusOr<Bundle> read = ReadBundle(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << contents.size() << ": " << read.status();
    EXPECT_NE(read.status().message().find(kBundleTablesFile), std::string::npos) << read.status();
  }
  // A tensor that says its table is elsewhere.
  const std::string path = out_.Join("moved");
  ASSERT_TRUE(WriteBundle(model_->report.bundle, path).ok());
  v1::TowerState state;
  ASSERT_TRUE(state.ParseFromString(ReadFile(path + "/item_tower.pb").value()));
  state.mutable_tensors(0)->set_offset(state.tensors(0).offset() + kBundleTableAlignment);
  ReplaceFile(path, "item_tower.pb", state.SerializeAsString());
  absl::StatusOr<Bundle> read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_NE(read.status().message().find("item_tower.pb tensor embedding/0"), std::string::npos) << read.status();
  // Format 2 without the file.
  EditManifest(path, [](v1::BundleManifest* m) {
    for (int i = 0; i < m->files_size(); ++i) {
      if (m->files(i).name() == kBundleTablesFile) m->mutable_files()->DeleteSubrange(i, 1);
    }
  });
  read = ReadBundle(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_NE(read.status().message().find(absl::StrCat("does not list ", kBundleTablesFile)), std::string::npos)
      << read.status();
}

// The server's UpsertItems of a known id after a load (snapshot.cc ApplyUpsert: the
// request's features encoded with the loaded item encoder, embedded with the loaded item
// tower, whose id table is mapped) gives the trainer's vector for that item, bit for bit.
TEST_F(BundleTest, AnUpsertOfAKnownIdAfterALoadGivesTheTrainersVector) {
  const Bundle& original = model_->report.bundle;
  const std::string path = WriteFresh();
  absl::StatusOr<Bundle> read = ReadBundle(path);
  ASSERT_TRUE(read.ok()) << read.status();
  // As the server holds the model: the catalogue takes the items out of the bundle.
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue = Catalogue::Create(*std::move(read), IndexOptions{}, path);
  ASSERT_TRUE(catalogue.ok()) << catalogue.status();
  const TowerModel& item = (*catalogue)->bundle()->item;
  ASSERT_FALSE(item.tower.embeddings()[0].mapped.empty());
  // The items' features as a client sends them: items.csv of the training data.
  std::istringstream csv(ReadFile(data_dir_->path() + "/items.csv").value());
  std::string line;
  std::getline(csv, line);
  ASSERT_EQ(line, "item_id,genres,brand,price");
  EncodedEntities upserted{{}, item.encoder.NewTable()};
  while (std::getline(csv, line)) {
    const std::vector<std::string> cells = absl::StrSplit(line, ',');
    ASSERT_EQ(cells.size(), 4u) << line;
    v1::Entity entity;
    entity.set_id(cells[0]);
    for (absl::string_view genre : absl::StrSplit(cells[1], '|')) {
      (*entity.mutable_features())["genres"].mutable_multi_hot()->add_values(std::string(genre));
    }
    (*entity.mutable_features())["brand"].set_categorical(cells[2]);
    (*entity.mutable_features())["price"].set_numeric(std::stod(cells[3]));
    absl::StatusOr<std::vector<RawValue>> values = item.encoder.FromRequest(entity.features());
    ASSERT_TRUE(values.ok()) << values.status();
    item.encoder.Encode(entity.id(), &*values, &upserted.rows);
    upserted.ids.push_back(entity.id());
  }
  ASSERT_EQ(upserted.ids, original.items.ids);
  EXPECT_EQ(item.tower.EmbedAll(upserted.rows), original.item_vectors);
}

}  // namespace
// SeenItems as untrusted input (users.pb is checksummed, but a bundle may be written by
// anything): every malformed encoding is DATA_LOSS naming the file and the field.
TEST(SeenItemsTest, RoundTripsAndRefusesMalformedEncodings) {
  const std::vector<std::vector<int32_t>> sets = {{5, 1, 3, 1}, {}, {0, 200, 2}, {7}};
  const SeenItems seen = SeenItems::Of(sets);
  v1::SeenItems proto;
  seen.ToProto(&proto);
  EXPECT_EQ(proto.ends_size(), 4);
  v1::SeenItems copy = proto;
  absl::StatusOr<SeenItems> read = SeenItems::FromProto(&copy, 4, 201, "users.pb");
  ASSERT_THAT(read, IsOk());
  const std::vector<std::vector<int32_t>> want = {{1, 3, 5}, {}, {0, 2, 200}, {7}};
  for (int u = 0; u < 4; ++u) {
    std::vector<int32_t> got;
    read->AppendRowsOf(u, &got);
    EXPECT_EQ(got, want[u]) << "user " << u;
  }
  std::vector<int32_t> none;
  read->AppendRowsOf(4, &none);
  read->AppendRowsOf(-1, &none);
  EXPECT_TRUE(none.empty());
  // Absent: no seen sets, not an error.
  v1::SeenItems empty;
  absl::StatusOr<SeenItems> absent = SeenItems::FromProto(&empty, 4, 201, "users.pb");
  ASSERT_THAT(absent, IsOk());
  EXPECT_TRUE(absent->empty());

  const auto refused = [](v1::SeenItems proto, int64_t users, int64_t items, const std::string& what) {
    const absl::Status s = SeenItems::FromProto(&proto, users, items, "users.pb").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << what << ": " << s;
    EXPECT_NE(s.message().find("users.pb: seen."), std::string::npos) << s;
  };
  refused(proto, 3, 201, "an end per user");
  refused(proto, 4, 200, "a row past the catalogue");
  v1::SeenItems bad = proto;
  bad.set_ends(1, bad.ends(1) + 100);
  refused(bad, 4, 201, "an end past the rows");
  bad = proto;
  bad.set_ends(1, 0);
  refused(bad, 4, 201, "ends going back");
  bad = proto;
  bad.mutable_rows()->push_back('\x01');
  refused(bad, 4, 201, "bytes after the last end");
  // Rows 0, 0: a zero delta is an item twice.
  bad.Clear();
  bad.add_ends(2);
  bad.set_rows(std::string("\x00\x00", 2));
  refused(bad, 1, 10, "an item twice");
  // A varint cut by its user's end, and one longer than a row can be.
  bad.Clear();
  bad.add_ends(1);
  bad.set_rows(std::string("\x81", 1));
  refused(bad, 1, 10, "a cut varint");
  bad.Clear();
  bad.add_ends(6);
  bad.set_rows(std::string("\x81\x81\x81\x81\x81\x01", 6));
  refused(bad, 1, 10, "a varint of six bytes");
}

}  // namespace twotower
