#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/adam.h"
#include "model/losses.h"

namespace twotower {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Both towers with their gradients, activations and optimizer state.
struct TowerTrainingState {
  Tower tower;
  TowerGradients grads;
  TowerActivations acts;
  std::unique_ptr<AdamOptimizer> optimizer;
  EncodedTable batch;
  std::vector<float> out, d_out;
};

absl::StatusOr<TowerTrainingState> MakeState(const v1::TowerSpec& spec,
                                             const FeatureEncoder& encoder,
                                             const AdamOptions& adam, uint64_t seed) {
  absl::StatusOr<Tower> tower = Tower::Create(ShapeFor(spec, encoder), seed);
  if (!tower.ok()) return tower.status();
  TowerTrainingState state;
  state.tower = *std::move(tower);
  state.grads = state.tower.NewGradients();
  state.optimizer = std::make_unique<AdamOptimizer>(state.tower, adam);
  state.batch = encoder.NewTable();
  return state;
}

}  // namespace

absl::StatusOr<TrainingReport> Train(const v1::TrainerConfig& config, const TrainingData& data,
                                     std::FILE* log) {
  const v1::TrainingSpec& t = config.training();
  const AdamOptions adam{.learning_rate = t.learning_rate(), .weight_decay = t.weight_decay()};
  absl::StatusOr<TowerTrainingState> user =
      MakeState(config.user_tower(), data.user_encoder, adam, t.seed() * 2 + 1);
  if (!user.ok()) return user.status();
  absl::StatusOr<TowerTrainingState> item =
      MakeState(config.item_tower(), data.item_encoder, adam, t.seed() * 2 + 2);
  if (!item.ok()) return item.status();
  const int dim = user->tower.output_dim();
  const std::vector<int> ks(t.eval_k().begin(), t.eval_k().end());

  std::mt19937_64 rng(t.seed());
  std::vector<int32_t> order(data.train_users.size());
  std::iota(order.begin(), order.end(), 0);
  const int batch_size = t.batch_size();
  const int64_t steps_per_epoch = (static_cast<int64_t>(order.size()) + batch_size - 1) / batch_size;
  std::vector<int32_t> batch_items;
  std::vector<float> log_q;

  TrainingReport report;
  const Clock::time_point start = Clock::now();
  int64_t examples = 0;
  for (int epoch = 1; epoch <= t.epochs(); ++epoch) {
    // Fisher-Yates with the raw engine: identical on every standard library.
    for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng() % (i + 1)]);
    const Clock::time_point epoch_start = Clock::now();
    double loss_sum = 0;
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      const size_t begin = static_cast<size_t>(step) * batch_size;
      const size_t end = std::min(order.size(), begin + batch_size);
      if (end - begin < 2) continue;  // a one-example batch has no negatives
      user->batch.Clear();
      item->batch.Clear();
      batch_items.clear();
      log_q.clear();
      for (size_t i = begin; i < end; ++i) {
        const int32_t v = data.train_items[order[i]];
        user->batch.AppendRowFrom(data.users.rows, data.train_users[order[i]]);
        item->batch.AppendRowFrom(data.items.rows, v);
        batch_items.push_back(v);
        if (t.logq_correction()) log_q.push_back(data.item_log_frequency[v]);
      }
      const int n = static_cast<int>(end - begin);
      for (TowerTrainingState* s : {&*user, &*item}) {
        s->out.resize(static_cast<size_t>(n) * dim);
        s->d_out.resize(static_cast<size_t>(n) * dim);
        s->tower.Forward(s->batch, &s->acts, s->out.data());
      }
      loss_sum += InBatchSoftmaxLoss(user->out.data(), item->out.data(), n, n, dim, batch_items,
                                     log_q, t.temperature(), user->d_out.data(),
                                     item->d_out.data());
      for (TowerTrainingState* s : {&*user, &*item}) {
        s->grads.Clear();
        s->tower.Backward(s->batch, s->acts, s->d_out.data(), &s->grads);
        s->optimizer->Step(s->grads, &s->tower);
      }
      examples += n;
    }
    const double epoch_seconds = Seconds(epoch_start);
    report.final_loss = loss_sum / std::max<int64_t>(1, steps_per_epoch);
    if (log != nullptr) {
      std::fprintf(log, "epoch %d/%d  loss %.4f  %.0f examples/s  %.1fs\n", epoch, t.epochs(),
                   report.final_loss, data.train_users.size() / std::max(epoch_seconds, 1e-9),
                   epoch_seconds);
    }
    const bool last = epoch == t.epochs();
    const bool periodic = t.eval_every_epochs() > 0 && epoch % t.eval_every_epochs() == 0;
    if (!data.eval_sets.empty() && (last || periodic)) {
      const std::vector<float> item_vectors = item->tower.EmbedAll(data.items.rows);
      absl::StatusOr<std::vector<EvalResult>> eval =
          Evaluate(data, user->tower, item_vectors, ks, 0, nullptr);
      if (!eval.ok()) return eval.status();
      if (log != nullptr) {
        for (const EvalResult& r : *eval) std::fprintf(log, "  eval %s\n", FormatEvalResult(r).c_str());
      }
      if (last) report.final_eval = *std::move(eval);
    }
  }
  report.examples_per_second = examples / std::max(Seconds(start), 1e-9);

  Bundle& bundle = report.bundle;
  *bundle.manifest.mutable_config() = config;
  bundle.manifest.set_model_version(NewModelVersion());
  bundle.manifest.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  bundle.user = {data.user_encoder, std::move(user->tower)};
  bundle.item = {data.item_encoder, std::move(item->tower)};
  bundle.users = data.users;
  bundle.items = data.items;
  bundle.item_vectors = bundle.item.tower.EmbedAll(bundle.items.rows);
  return report;
}

}  // namespace twotower
