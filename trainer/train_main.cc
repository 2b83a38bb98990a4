// twotower_train: trains both towers per a config and exports a model bundle.
//
//   twotower_train --config configs/synthetic.textproto --data_dir DATA --export_dir bundles
//
// Writes bundles/<model_version>/ and points bundles/latest at it.
#include <sys/stat.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include "absl/flags/flag.h"
#include "util/program_usage.h"
#include "absl/flags/usage.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "bundle/bundle.h"
#include "index/bundle_index.h"
#include "index/item_index.h"
#include "model/tower.h"
#include "trainer/config.h"
#include "trainer/evaluator.h"
#include "trainer/trainer.h"
#include "trainer/training_data.h"
#include "util/file.h"
#include "util/status_macros.h"

ABSL_FLAG(std::string, config, "", "Trainer config (text TrainerConfig), required");
ABSL_FLAG(std::string, data_dir, "",
          "Folder that relative table paths in the config resolve against "
          "(default: the config's folder)");
ABSL_FLAG(std::string, export_dir, "bundles",
          "Bundles are written to <export_dir>/<model_version>; <export_dir>/latest points "
          "at the newest");
ABSL_FLAG(std::string, recs_out, "",
          "If set, write the top --recs_depth items of every evaluated user here "
          "(user<TAB>item<TAB>rank, the input of the protocol's scorer eval.py). With {set} in the "
          "path, one file per eval set ({set} = its name); needed when two sets rank the "
          "same user (e.g. cold, and cold5 with a request-time history)");
ABSL_FLAG(int, recs_depth, 100, "Depth of the --recs_out lists");
ABSL_FLAG(std::string, override, "",
          "Text-format TrainerConfig merged over the config (scalars replace; a feature or "
          "eval set named like an existing one merges into it, other repeated entries are "
          "appended), e.g. 'training { objective: OBJECTIVE_POINTWISE num_negatives: 3 }' or "
          "'data { users { features { name: \"history\" history_length: 50 } } }'");
ABSL_FLAG(int, epochs, 0, "Override training.epochs (0 = use the config)");
ABSL_FLAG(int, threads, 0, "Override training.threads (0 = use the config)");
ABSL_FLAG(bool, skip_bad_rows, false,
          "Skip (and count) malformed rows of every table instead of stopping at the first");
ABSL_FLAG(uint64_t, seed, 0, "Override training.seed (0 = use the config)");
ABSL_FLAG(std::string, metrics_out, "", "If set, write one JSON line of metrics per epoch here");
ABSL_FLAG(std::string, plot_out, "",
          "If set, render the loss and Recall curves to this PNG (needs gnuplot)");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return 1;
}

// An output file's folder exists (or is created) and takes new files, and the path is not
// a directory: found out before the run, not after it.
absl::Status CheckOutputFile(const char* flag, const std::string& path) {
  if (absl::Status s = twotower::EnsureWritableDirectory(twotower::DirName(path)); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("--", flag, " ", path, ": ", s.message()));
  }
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::FailedPreconditionError(absl::StrCat("--", flag, " ", path, ": is a directory"));
  }
  return absl::OkStatus();
}

// --export_dir exists (or is created) and takes new entries; its `latest`, if any, is a
// symlink the trainer can replace.
absl::Status CheckExportDir(const std::string& export_dir) {
  if (absl::Status s = twotower::EnsureWritableDirectory(export_dir); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("--export_dir ", export_dir, ": ", s.message()));
  }
  const std::string latest = absl::StrCat(export_dir, "/latest");
  struct stat st;
  if (::lstat(latest.c_str(), &st) == 0 && !S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--export_dir: ", latest, " exists and is not a symlink; the trainer points it "
                     "at the new bundle, so move it away"));
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv);

}  // namespace

// Out of memory anywhere in a run (a config or data larger than this machine can hold) is
// an error and a non-zero exit, not an abort.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "error: out of memory: the data and the config's sizes (vocabularies, embedding "
                 "dims, hidden_dims, batch_size, negatives) need more memory than is available\n");
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "error: a size is too large to allocate (%s): check the config's sizes\n",
                 e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}

namespace {

// The config file with --override and the flags that change it applied, validated.
absl::StatusOr<twotower::v1::TrainerConfig> ConfigFromFlags(const std::string& config_path) {
  ASSIGN_OR_RETURN(twotower::v1::TrainerConfig config, twotower::LoadTrainerConfig(config_path));
  if (const std::string text = absl::GetFlag(FLAGS_override); !text.empty()) {
    RETURN_IF_ERROR(twotower::ApplyOverride(text, &config));
  }
  if (absl::GetFlag(FLAGS_epochs) > 0) config.mutable_training()->set_epochs(absl::GetFlag(FLAGS_epochs));
  if (absl::GetFlag(FLAGS_skip_bad_rows)) {
    twotower::v1::DataSpec* data = config.mutable_data();
    data->mutable_train()->mutable_table()->set_skip_bad_rows(true);
    if (data->users().has_table()) data->mutable_users()->mutable_table()->set_skip_bad_rows(true);
    if (data->items().has_table()) data->mutable_items()->mutable_table()->set_skip_bad_rows(true);
    for (twotower::v1::EvalSetSpec& eval : *data->mutable_eval()) {
      eval.mutable_interactions()->mutable_table()->set_skip_bad_rows(true);
    }
  }
  if (absl::GetFlag(FLAGS_threads) > 0) config.mutable_training()->set_threads(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_seed) > 0) config.mutable_training()->set_seed(absl::GetFlag(FLAGS_seed));
  RETURN_IF_ERROR(twotower::ValidateTrainerConfig(config));
  return config;
}

// Where the run writes, every place checked before it starts: a run must not end in
// "cannot write".
struct Outputs {
  std::string export_dir;
  std::string plot_out;
  std::string metrics_out;
  bool recs_per_set = false;            // --recs_out has {set}: a file per eval set
  std::vector<std::string> recs_paths;  // per eval set, or the one file, or none
};

absl::StatusOr<Outputs> CheckOutputs(const twotower::v1::TrainerConfig& config) {
  Outputs out;
  out.plot_out = absl::GetFlag(FLAGS_plot_out);
  out.metrics_out = absl::GetFlag(FLAGS_metrics_out);
  if (!out.plot_out.empty()) RETURN_IF_ERROR(twotower::CheckPlotterAvailable());
  out.export_dir = absl::GetFlag(FLAGS_export_dir);
  RETURN_IF_ERROR(CheckExportDir(out.export_dir));
  const std::string recs_out = absl::GetFlag(FLAGS_recs_out);
  out.recs_per_set = absl::StrContains(recs_out, "{set}");
  if (out.recs_per_set) {
    for (const twotower::v1::EvalSetSpec& eval : config.data().eval()) {
      out.recs_paths.push_back(absl::StrReplaceAll(recs_out, {{"{set}", eval.name()}}));
    }
  } else if (!recs_out.empty()) {
    out.recs_paths.push_back(recs_out);
  }
  for (const std::string& path : out.recs_paths) RETURN_IF_ERROR(CheckOutputFile("recs_out", path));
  for (const auto& [flag, path] : {std::pair{"plot_out", out.plot_out}, std::pair{"metrics_out", out.metrics_out}}) {
    if (!path.empty()) RETURN_IF_ERROR(CheckOutputFile(flag, path));
  }
  return out;
}

// One --recs_out file cannot rank a user twice (eval.py refuses it).
absl::Status CheckOneRecsFile(const twotower::TrainingData& data) {
  absl::flat_hash_map<int32_t, std::string> set_of_user;
  for (const twotower::EvalSet& set : data.eval_sets) {
    for (const int32_t u : set.user_rows) {
      const auto [it, inserted] = set_of_user.emplace(u, set.name);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("--recs_out: eval sets \"", it->second, "\" and \"", set.name,
                                                       "\" both rank user \"", data.users.ids[u],
                                                       "\"; put {set} in the path to write one file per set"));
      }
    }
  }
  return absl::OkStatus();
}

// The exported model's top-N lists of every eval set, to --recs_out.
absl::Status WriteRecs(const Outputs& out, const twotower::v1::TrainerConfig& config,
                       const twotower::TrainingData& data, const twotower::TrainingReport& report) {
  std::vector<std::string> recs;
  RETURN_IF_ERROR(twotower::Evaluate(data, report.bundle.user.tower, report.bundle.item_vectors,
                                     {config.training().eval_k().begin(), config.training().eval_k().end()},
                                     absl::GetFlag(FLAGS_recs_depth), &recs)
                      .status());
  if (!out.recs_per_set) recs = {absl::StrJoin(recs, "")};
  for (size_t i = 0; i < out.recs_paths.size(); ++i) {
    RETURN_IF_ERROR(twotower::WriteFileDurably(out.recs_paths[i], recs[i]));
    std::printf("wrote recommendations to %s\n", out.recs_paths[i].c_str());
  }
  return absl::OkStatus();
}

// export_dir/<model version>/ (with the config's index) and export_dir/latest pointing at it.
absl::Status Export(const std::string& export_dir, const std::string& index_factory,
                    const twotower::TrainingReport& report) {
  const std::string version = report.bundle.model_version();
  const std::string bundle_dir = absl::StrCat(export_dir, "/", version);
  twotower::IndexBuildReport index_report;
  RETURN_IF_ERROR(twotower::WriteBundleWithIndex(report.bundle, bundle_dir, index_factory, &index_report));
  if (index_report.file_bytes > 0) {
    std::printf("index: %s built in %.1f s, %s/%s (%llu bytes)\n", index_factory.c_str(), index_report.build_seconds,
                bundle_dir.c_str(), twotower::kBundleIndexFile,
                static_cast<unsigned long long>(index_report.file_bytes));
  }
  RETURN_IF_ERROR(twotower::UpdateSymlink(version, absl::StrCat(export_dir, "/latest")));
  std::printf("bundle: %s (model version %s; %s/latest points here)\n", bundle_dir.c_str(), version.c_str(),
              export_dir.c_str());
  return absl::OkStatus();
}

// Config, checks, data, popularity baseline, training, recommendations, bundle.
absl::Status TrainAndExport(const std::string& config_path) {
  ASSIGN_OR_RETURN(const twotower::v1::TrainerConfig config, ConfigFromFlags(config_path));
  ASSIGN_OR_RETURN(const Outputs out, CheckOutputs(config));
  std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) data_dir = twotower::DirName(config_path);
  ASSIGN_OR_RETURN(const twotower::TrainingData data, twotower::LoadTrainingData(config, data_dir, stderr));
  if (!out.recs_paths.empty() && !out.recs_per_set) RETURN_IF_ERROR(CheckOneRecsFile(data));
  std::printf("data: %zu users, %zu items, %zu training interactions\n", data.users.ids.size(), data.items.ids.size(),
              data.train_users.size());
  std::fflush(stdout);
  // The index the bundle will carry fits these items (checked now, not after training).
  const std::string index_factory = config.export_().index_factory();
  if (absl::Status s =
          twotower::CheckIndexFits(index_factory.empty() ? "Flat" : index_factory,
                                   static_cast<int64_t>(data.items.ids.size()), config.item_tower().output_dim());
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: export.index_factory: ", s.message()));
  }
  ASSIGN_OR_RETURN(
      const std::vector<twotower::EvalResult> popularity,
      twotower::EvaluatePopularity(data, {config.training().eval_k().begin(), config.training().eval_k().end()}));
  for (const twotower::EvalResult& r : popularity) {
    std::printf("  popularity baseline %s\n", twotower::FormatEvalResult(r).c_str());
  }

  twotower::TrainOptions options;
  options.log = stdout;
  options.metrics_path = out.metrics_out;
  ASSIGN_OR_RETURN(const twotower::TrainingReport report, twotower::Train(config, data, options));
  std::printf("trained: %.0f examples/s overall, final loss %.4f, exporting epoch %d\n", report.examples_per_second,
              report.final_loss, report.exported_epoch);
  if (!out.plot_out.empty()) {
    RETURN_IF_ERROR(twotower::RenderTrainingPlot(report.history, config.training().selection_k(), out.plot_out));
    std::printf("wrote training curves to %s\n", out.plot_out.c_str());
  }
  if (!out.recs_paths.empty()) RETURN_IF_ERROR(WriteRecs(out, config, data, report));
  return Export(out.export_dir, index_factory, report);
}

int Run(int argc, char** argv) {
  twotower::ParseCommandLineWithUsage(
      argc, argv,
      "Trains a two-tower model: twotower_train --config FILE [--data_dir DIR] "
      "[--export_dir DIR] [--recs_out FILE]");
  twotower::UseSingleThreadedBlas();
  const std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) {
    std::fprintf(stderr, "error: --config is required\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_recs_depth) < 1 || absl::GetFlag(FLAGS_recs_depth) > twotower::kMaxEvalK ||
      absl::GetFlag(FLAGS_epochs) < 0) {
    std::fprintf(stderr, "error: --recs_depth must be in 1..%d and --epochs >= 0\n", twotower::kMaxEvalK);
    return 2;
  }
  if (absl::Status s = TrainAndExport(config_path); !s.ok()) return Fail(s);
  return 0;
}

}  // namespace
