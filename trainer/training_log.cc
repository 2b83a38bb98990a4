#include "trainer/training_log.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace twotower {

std::string EpochRecordJson(const EpochRecord& r) {
  std::string out = absl::StrFormat(
      "{\"epoch\":%d,\"loss\":%.6f,\"examples_per_second\":%.1f,\"seconds\":%.3f", r.epoch,
      r.loss, r.examples_per_second, r.seconds);
  if (!r.eval.empty()) {
    absl::StrAppend(&out, ",\"eval\":{");
    for (size_t s = 0; s < r.eval.size(); ++s) {
      const EvalResult& e = r.eval[s];
      // Eval set names come from the config; keep the JSON valid whatever they hold.
      std::string name;
      for (char c : e.name) {
        if (c == '"' || c == '\\') name.push_back('\\');
        if (static_cast<unsigned char>(c) >= 0x20) name.push_back(c);
      }
      absl::StrAppendFormat(&out, "%s\"%s\":{\"users\":%d", s > 0 ? "," : "", name, e.users);
      for (size_t j = 0; j < e.ks.size(); ++j) {
        absl::StrAppendFormat(&out, ",\"recall@%d\":%.6f", e.ks[j], e.recall[j]);
      }
      absl::StrAppendFormat(&out, ",\"ndcg@10\":%.6f}", e.ndcg_at_10);
    }
    absl::StrAppend(&out, "}");
  }
  absl::StrAppend(&out, "}");
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsLog>> MetricsLog::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<MetricsLog>(new MetricsLog(file));
}

MetricsLog::~MetricsLog() { std::fclose(file_); }

absl::Status MetricsLog::Append(const EpochRecord& record) {
  const std::string line = EpochRecordJson(record) + "\n";
  if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    return absl::InternalError("cannot write the metrics file");
  }
  return absl::OkStatus();
}

namespace {
// Runs `argv` and waits; OK when it exits 0.
absl::Status Run(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return absl::FailedPreconditionError(
        absl::StrCat(args[0], " not found (Debian: apt-get install gnuplot-nox)"));
  }
  return absl::InternalError(absl::StrCat(args[0], " failed"));
}
}  // namespace

absl::Status CheckPlotterAvailable() { return Run({"gnuplot", "-e", "exit"}); }

absl::Status RenderTrainingPlot(const std::vector<EpochRecord>& history, int recall_k,
                                const std::string& png_path) {
  // Data: one block for the loss, one per eval set for Recall@k.
  std::string data = "# epoch loss\n";
  for (const EpochRecord& r : history) absl::StrAppendFormat(&data, "%d %.6f\n", r.epoch, r.loss);
  std::set<std::string> names;
  for (const EpochRecord& r : history) {
    for (const EvalResult& e : r.eval) names.insert(e.name);
  }
  for (const std::string& name : names) {
    absl::StrAppend(&data, "\n\n# ", name, "\n");
    for (const EpochRecord& r : history) {
      for (const EvalResult& e : r.eval) {
        if (e.name != name) continue;
        for (size_t j = 0; j < e.ks.size(); ++j) {
          if (e.ks[j] == recall_k) absl::StrAppendFormat(&data, "%d %.6f\n", r.epoch, e.recall[j]);
        }
      }
    }
  }
  const std::string data_path = png_path + ".dat";
  const std::string script_path = png_path + ".gp";
  std::string script = absl::StrFormat(
      "set terminal pngcairo size 1000,420 noenhanced\n"
      "set output '%s'\n"
      "set multiplot layout 1,2 title 'twotower training'\n"
      "set xlabel 'epoch'\nset grid\n"
      "set title 'training loss'\n"
      "plot '%s' index 0 with linespoints title 'loss'\n"
      "set title 'Recall@%d'\n",
      png_path, data_path, recall_k);
  if (names.empty()) {
    absl::StrAppend(&script, "set label 'no evaluation' at graph 0.4,0.5\nplot NaN notitle\n");
  } else {
    absl::StrAppend(&script, "plot ");
    int block = 1;
    for (const std::string& name : names) {
      absl::StrAppendFormat(&script, "%s'%s' index %d with linespoints title '%s'",
                            block > 1 ? ", " : "", data_path, block, name);
      ++block;
    }
    absl::StrAppend(&script, "\n");
  }
  absl::StrAppend(&script, "unset multiplot\n");
  RETURN_IF_ERROR(WriteFileDurably(data_path, data));
  RETURN_IF_ERROR(WriteFileDurably(script_path, script));
  absl::Status status = Run({"gnuplot", script_path});
  std::remove(data_path.c_str());
  std::remove(script_path.c_str());
  return status;
}

}  // namespace twotower
