// libFuzzer target: ReadBundle on a bundle directory with one file replaced by fuzzed
// bytes (untrusted input: whatever an operator points ReloadModel at).
//
// At start-up a tiny model is trained on synthetic data and written as a valid bundle. Each
// input is <selector byte><contents>: the selector picks the file to replace. For the binary
// files the MANIFEST's size and SHA-256 are rewritten to match, so the fuzzer gets past the
// checksum into the parsers and the shape / vocabulary / forward-pass checks. For MANIFEST
// itself the fuzzed text is parsed and, when it parses, its file list is replaced by the
// real one (same reason); otherwise the raw bytes are written, for the text parser.
//
// Seeds: TWOTOWER_FUZZ_WRITE_SEEDS=DIR ./bundle_fuzzer writes one input per bundle file
// (the valid contents) into DIR and exits; scripts/fuzz.sh does that first.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bundle/bundle.h"
#include "dataset/synthetic.h"
#include "google/protobuf/text_format.h"
#include "trainer/config.h"
#include "trainer/trainer.h"
#include "trainer/training_data.h"
#include "util/file.h"
#include "util/sha256.h"

namespace {

namespace fs = std::filesystem;

const char* const kFiles[] = {"MANIFEST", "user_tower.pb", "item_tower.pb", "users.pb",
                              "items.pb", "item_embeddings.pb", "embedding_tables.f32"};
constexpr int kNumFiles = sizeof(kFiles) / sizeof(kFiles[0]);

struct ValidBundle {
  std::string work_dir;                   // scratch directory of this process
  twotower::v1::BundleManifest manifest;  // as written
  std::vector<std::string> contents;      // kFiles order
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "bundle_fuzzer: %s\n", message.c_str());
  std::exit(1);
}

ValidBundle MakeValidBundle() {
  ValidBundle valid;
  valid.work_dir = (fs::temp_directory_path() / absl::StrCat("bundle_fuzzer.", getpid())).string();
  fs::remove_all(valid.work_dir);
  fs::create_directories(valid.work_dir + "/data");
  twotower::SyntheticOptions options;
  options.users = 40;
  options.items = 30;
  options.min_clicks = 3;
  options.max_clicks = 6;
  if (absl::Status s = twotower::WriteSyntheticDataset(options, valid.work_dir + "/data"); !s.ok()) {
    Die(s.ToString());
  }
  absl::StatusOr<twotower::v1::TrainerConfig> config =
      twotower::LoadTrainerConfig(std::string(TWOTOWER_SOURCE_DIR) + "/configs/synthetic.textproto");
  if (!config.ok()) Die(config.status().ToString());
  config->mutable_training()->set_epochs(1);
  config->mutable_training()->clear_eval_k();
  config->mutable_data()->clear_eval();
  absl::StatusOr<twotower::TrainingData> data =
      twotower::LoadTrainingData(*config, valid.work_dir + "/data", nullptr);
  if (!data.ok()) Die(data.status().ToString());
  absl::StatusOr<twotower::TrainingReport> report = twotower::Train(*config, *data, {});
  if (!report.ok()) Die(report.status().ToString());
  const std::string dir = valid.work_dir + "/valid";
  if (absl::Status s = twotower::WriteBundle(report->bundle, dir); !s.ok()) Die(s.ToString());
  for (const char* name : kFiles) {
    absl::StatusOr<std::string> bytes = twotower::ReadFile(absl::StrCat(dir, "/", name));
    if (!bytes.ok()) Die(bytes.status().ToString());
    valid.contents.push_back(*std::move(bytes));
  }
  if (!google::protobuf::TextFormat::ParseFromString(valid.contents[0], &valid.manifest)) {
    Die("cannot parse the MANIFEST just written");
  }
  if (!twotower::ReadBundle(dir).ok()) Die("the valid bundle does not read back");
  return valid;
}

const ValidBundle& Valid() {
  static const ValidBundle valid = MakeValidBundle();
  return valid;
}

// Plain writes: no fsync, the fuzzer writes thousands of cases a second.
void WriteOrDie(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out.flush()) Die("cannot write " + path);
}

void RemoveWorkDir() { fs::remove_all(Valid().work_dir); }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const ValidBundle& valid = Valid();
  std::atexit(RemoveWorkDir);
  if (const char* seeds = std::getenv("TWOTOWER_FUZZ_WRITE_SEEDS")) {
    fs::create_directories(seeds);
    for (int f = 0; f < kNumFiles; ++f) {
      WriteOrDie(absl::StrCat(seeds, "/", kFiles[f]), std::string(1, static_cast<char>(f)) + valid.contents[f]);
    }
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const ValidBundle& valid = Valid();
  const int replaced = data[0] % kNumFiles;
  const std::string fuzzed(reinterpret_cast<const char*>(data + 1), size - 1);

  std::vector<std::string> contents = valid.contents;
  twotower::v1::BundleManifest manifest = valid.manifest;
  if (replaced == 0) {
    twotower::v1::BundleManifest parsed;
    if (google::protobuf::TextFormat::ParseFromString(fuzzed, &parsed)) {
      parsed.mutable_files()->CopyFrom(valid.manifest.files());
      google::protobuf::TextFormat::PrintToString(parsed, &contents[0]);
    } else {
      contents[0] = fuzzed;
    }
  } else {
    contents[replaced] = fuzzed;
    for (twotower::v1::BundleFile& file : *manifest.mutable_files()) {
      if (file.name() == kFiles[replaced]) {
        file.set_bytes(static_cast<int64_t>(fuzzed.size()));
        file.set_sha256(twotower::Sha256Hex(fuzzed));
      }
    }
    google::protobuf::TextFormat::PrintToString(manifest, &contents[0]);
  }

  const std::string dir = valid.work_dir + "/case";
  fs::create_directories(dir);
  for (int f = 0; f < kNumFiles; ++f) WriteOrDie(absl::StrCat(dir, "/", kFiles[f]), contents[f]);
  absl::StatusOr<twotower::Bundle> bundle = twotower::ReadBundle(dir);
  if (bundle.ok()) {
    // Whatever is accepted must be internally consistent: the server indexes these directly.
    const size_t expected = bundle->items.ids.size() * static_cast<size_t>(bundle->embedding_dim());
    if (bundle->item_vectors.size() != expected) __builtin_trap();
    if (bundle->users.rows.size() != static_cast<int>(bundle->users.ids.size())) __builtin_trap();
    if (bundle->items.rows.size() != static_cast<int>(bundle->items.ids.size())) __builtin_trap();
  }
  return 0;
}
