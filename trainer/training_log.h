// What training leaves behind for people: one JSON line per epoch (loss, speed, metrics)
// and a PNG of the loss and recall curves rendered with gnuplot.
#ifndef TWOTOWER_TRAINER_TRAINING_LOG_H_
#define TWOTOWER_TRAINER_TRAINING_LOG_H_

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "trainer/evaluator.h"

namespace twotower {

struct EpochRecord {
  int epoch = 0;
  double loss = 0;
  double examples_per_second = 0;
  double seconds = 0;
  std::vector<EvalResult> eval;  // empty when the epoch was not evaluated
};

// One JSON object per line, e.g.
// {"epoch":2,"loss":5.61,"examples_per_second":160000,"seconds":0.5,
//  "eval":{"warm":{"users":849,"recall@10":0.1,...,"ndcg@10":0.18}}}
std::string EpochRecordJson(const EpochRecord& record);

// Appends records to a file as training goes (flushed per line), so it can be watched.
class MetricsLog {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsLog>> Open(const std::string& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  absl::Status Append(const EpochRecord& record);

 private:
  explicit MetricsLog(std::FILE* file) : file_(file) {}
  std::FILE* file_;
};

// Fails early (before training) when gnuplot is not installed.
absl::Status CheckPlotterAvailable();

// Renders loss per epoch and Recall@k of every eval set to a PNG with gnuplot.
absl::Status RenderTrainingPlot(const std::vector<EpochRecord>& history, int recall_k,
                                const std::string& png_path);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_TRAINING_LOG_H_
