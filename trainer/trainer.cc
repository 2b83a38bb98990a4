#include "trainer/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <mutex>
#include <numbers>
#include <numeric>
#include <thread>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/losses.h"
#include "model/optimizer.h"
#include "trainer/negative_sampler.h"
#include "util/config_enums.h"
#include "util/random.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

using Clock = std::chrono::steady_clock;
using Objective = v1::TrainingSpec::Objective;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The towers being trained and their optimizers, shared by all workers.
struct Model {
  Tower user;
  Tower item;
  std::unique_ptr<Optimizer> user_optimizer;
  std::unique_ptr<Optimizer> item_optimizer;
};

// Whether the bundle of a model of these shapes can be written: each of its binary files is
// one protobuf message of at most 2 GiB. Checked before training, so a run does not end in
// a refused export. Estimates: float32 tensors, vocabulary strings with their framing,
// encoded rows as varints.
absl::Status CheckBundleFits(const char* side, const TowerShape& shape, const FeatureEncoder& encoder,
                             const EncodedEntities& entities) {
  const auto over = [](int64_t bytes) { return bytes > kMaxBundleFileBytes; };
  int64_t tower = 0;
  std::string largest;
  int64_t largest_floats = -1;
  for (size_t f = 0; f < shape.fields.size(); ++f) {
    const int64_t floats = int64_t{shape.fields[f].rows} * shape.fields[f].dim;
    tower += 4 * floats;
    if (floats > largest_floats) {
      largest_floats = floats;
      largest = absl::StrCat(f == 0 ? std::string("the id embedding") : absl::StrCat("embedding field ", f), ": ",
                             shape.fields[f].rows, " rows x ", shape.fields[f].dim);
    }
  }
  const std::vector<int> dims = shape.layer_dims();
  for (size_t l = 0; l + 1 < dims.size(); ++l) tower += 4 * (int64_t{dims[l]} + 1) * dims[l + 1];
  for (const absl::string_view token : encoder.ids().tokens()) tower += static_cast<int64_t>(token.size()) + 3;
  for (int f = 1; f < encoder.num_fields(); ++f) {
    for (const absl::string_view token : encoder.FieldVocabulary(f).tokens()) {
      tower += static_cast<int64_t>(token.size()) + 3;
    }
  }
  if (over(tower)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", side, " tower would take ~", tower, " bytes, over the ", kMaxBundleFileBytes,
        " bytes a bundle file can hold; the largest part is ", largest,
        ": lower the embedding dims or hash_buckets, or raise id_min_count / set max_vocabulary_size"));
  }
  int64_t rows = 0;
  for (const std::string& id : entities.ids) rows += static_cast<int64_t>(id.size()) + 3;
  rows += 5 * (static_cast<int64_t>(entities.rows.offsets().size()) +
               static_cast<int64_t>(entities.rows.indices().size())) +
          4 * static_cast<int64_t>(entities.rows.numeric().size());
  if (over(rows)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", side, "s' encoded rows (", entities.ids.size(), " ", side, "s) would take ~", rows,
        " bytes, over the ", kMaxBundleFileBytes, " bytes a bundle file can hold"));
  }
  return absl::OkStatus();
}

// Per-tower scratch of one worker: the unique entities of a batch and their vectors.
struct TowerScratch {
  EncodedTable rows;
  absl::flat_hash_map<int32_t, int32_t> slot;  // entity row -> position in `rows`
  TowerActivations acts;
  TowerGradients grads;
  std::vector<float> out, d_out;

  // Position of entity `row` in this batch, added on first use (with id dropout, which
  // also empties `history_field` if there is one, as for positives: see AddLeavingOut).
  int32_t Add(const EncodedTable& all, int32_t row, int history_field, float id_dropout, Rng& rng) {
    const auto [it, inserted] = slot.try_emplace(row, rows.size());
    if (inserted) {
      const bool dropped = Chance(rng, id_dropout);
      if (dropped && history_field > 0) {
        rows.AppendRowFromWithout(all, row, history_field, EncodedTable::kWholeField);
      } else {
        rows.AppendRowFrom(all, row);
      }
      if (dropped) rows.SetId(rows.size() - 1, Vocabulary::kOov);
    }
    return it->second;
  }
  // Appends entity `row` without `token` in its history field: one row per example, no
  // sharing (each example's history lacks its own positive). A dropped id drops the whole
  // history too: that is what an entity never seen looks like, so the path serving it
  // (OOV id, empty history, features) gets trained. (Items; users go through AddUser.)
  int32_t AddLeavingOut(const EncodedTable& all, int32_t row, int history_field, int32_t token, float id_dropout,
                        Rng& rng) {
    const bool dropped = Chance(rng, id_dropout);
    rows.AppendRowFromWithout(all, row, history_field, dropped ? EncodedTable::kWholeField : token);
    if (dropped) rows.SetId(rows.size() - 1, Vocabulary::kOov);
    return rows.size() - 1;
  }
  // Appends user `row` with its history field replaced by `history` minus `token` (the
  // example's positive: serving never retrieves what is already in the history), cut to
  // its last `keep` items (0 = all); nothing left: the OOV row. `drop.id` puts the OOV row
  // in the id field, `drop.history` empties the history.
  int32_t AddUser(const EncodedTable& all, int32_t row, int history_field,
                  std::span<const int32_t> history, int32_t token, const UserDrop& drop);
  std::vector<int32_t> history_buffer;
  void Clear() {
    rows.Clear();
    slot.clear();
  }
};

int32_t TowerScratch::AddUser(const EncodedTable& all, int32_t row, int history_field,
                              std::span<const int32_t> history, int32_t token, const UserDrop& drop) {
  AppendTrainingUser(all, row, history_field, history, token, drop, &rows, &history_buffer);
  return rows.size() - 1;
}

// Everything one thread needs to run steps; nothing in it is shared.
struct Worker {
  TowerScratch user, item;
  Rng rng;
  std::vector<int32_t> example_user, example_positive, example_negatives, shared_negatives;
  std::vector<int32_t> positive_keys, negative_keys, column_keys, example_user_rows;
  std::vector<uint8_t> masked;
  std::vector<float> users, positives, negatives, d_users, d_positives, d_negatives;
  std::vector<float> log_q_positive, log_q_negative, columns, d_columns, log_q_columns;
  std::vector<float> row_log_q_scale;
  std::vector<float> row_weight;
};

void Gather(const std::vector<float>& vectors, const std::vector<int32_t>& slots, int dim,
            std::vector<float>* out) {
  out->resize(slots.size() * dim);
  for (size_t i = 0; i < slots.size(); ++i) {
    std::copy_n(vectors.data() + static_cast<size_t>(slots[i]) * dim, dim, out->data() + i * dim);
  }
}

void Scatter(const std::vector<float>& grads, const std::vector<int32_t>& slots, int dim,
             std::vector<float>* d_vectors) {
  for (size_t i = 0; i < slots.size(); ++i) {
    float* dst = d_vectors->data() + static_cast<size_t>(slots[i]) * dim;
    const float* src = grads.data() + i * dim;
    for (int k = 0; k < dim; ++k) dst[k] += src[k];
  }
}

class TrainingLoop {
 public:
  TrainingLoop(const v1::TrainerConfig& config, const TrainingData& data, Model* model,
               const NegativeSampler* sampler)
      : t_(config.training()), data_(data), model_(model), sampler_(sampler),
        dim_(model->user.output_dim()), user_history_(data.user_encoder.HistoryField()),
        item_history_(data.item_encoder.HistoryField()),
        cold_row_weight_(ColdRowWeights(t_.cold_user_balance(), data.train_users,
                                         static_cast<size_t>(data.users.rows.size()))) {}

  // w.row_weight: the rows served through the OOV id weighted per user
  // (cold_user_balance), the others 1; empty when unweighted.
  void FillRowWeights(Worker& w, int batch) const {
    w.row_weight.clear();
    if (cold_row_weight_.empty()) return;
    for (int i = 0; i < batch; ++i) {
      w.row_weight.push_back(w.user.rows.Id(w.example_user[i]) == Vocabulary::kOov
                                 ? cold_row_weight_[w.example_user_rows[i]]
                                 : 1.0f);
    }
  }

  // One step over examples order[begin, end) at learning_rate * lr_scale; returns the
  // batch's mean loss.
  float Step(Worker& w, const std::vector<int32_t>& order, size_t begin, size_t end, float lr_scale) {
    AssembleBatch(w, order, begin, end);
    // Forward each unique user and item once.
    for (auto [scratch, tower] : {std::pair{&w.user, &model_->user}, std::pair{&w.item, &model_->item}}) {
      const size_t size = static_cast<size_t>(scratch->rows.size()) * dim_;
      scratch->out.resize(size);
      scratch->d_out.assign(size, 0.0f);
      tower->Forward(scratch->rows, &scratch->acts, scratch->out.data());
    }

    const float loss = Loss(w, static_cast<int>(end - begin));

    for (auto [scratch, tower, optimizer] : {std::tuple{&w.user, &model_->user, model_->user_optimizer.get()},
                                             std::tuple{&w.item, &model_->item, model_->item_optimizer.get()}}) {
      if (scratch->grads.weights.empty()) scratch->grads = tower->NewGradients();
      scratch->grads.Clear();
      tower->Backward(scratch->rows, scratch->acts, scratch->d_out.data(), &scratch->grads);
      optimizer->Step(scratch->grads, tower, lr_scale);
    }
    return loss;
  }

 private:
  // The examples order[begin, end) into w: each unique user and item row once (with the
  // example's history, dropout and short-history draws), the examples' slots and keys,
  // and the negatives (per example, or shared by the batch for in-batch softmax).
  void AssembleBatch(Worker& w, const std::vector<int32_t>& order, size_t begin, size_t end) {
    const int n = t_.num_negatives();
    w.user.Clear();
    w.item.Clear();
    w.example_user.clear();
    w.example_positive.clear();
    w.example_negatives.clear();
    w.shared_negatives.clear();
    w.positive_keys.clear();
    w.negative_keys.clear();
    w.example_user_rows.clear();
    for (size_t i = begin; i < end; ++i) {
      const int32_t u = data_.train_users[order[i]];
      const int32_t v = data_.train_items[order[i]];
      // The user's history in this example: what came before it (HISTORY_CONTEXT_PRECEDING),
      // or all of it but the positive (HISTORY_CONTEXT_LEAVE_ONE_OUT), or none.
      if (user_history_ > 0) {
        const UserDrop drop = DrawUserDrop(t_, w.rng);
        const TrainingData::PrecedingHistory& preceding = data_.user_preceding;
        const std::span<const int32_t> history =
            preceding.empty()                                        ? data_.users.rows.Field(u, user_history_)
            : drop.keep == 0                                         ? preceding.Of(order[i], drop.gap)
            : drop.from == v1::TrainingSpec::SHORT_HISTORY_FROM_ANY  ? preceding.All(order[i])
            : drop.from != v1::TrainingSpec::SHORT_HISTORY_FROM_LAST ? preceding.Timeline(order[i], drop.gap)
                                                                     : preceding.Of(order[i], drop.gap);
        w.example_user.push_back(
            w.user.AddUser(data_.users.rows, u, user_history_, history, data_.history_token_of_item[v], drop));
      } else {
        w.example_user.push_back(w.user.Add(data_.users.rows, u, user_history_, t_.user_id_dropout(), w.rng));
      }
      w.example_positive.push_back(
          item_history_ > 0
              ? w.item.AddLeavingOut(data_.items.rows, v, item_history_, data_.history_token_of_user[u],
                                     t_.item_id_dropout(), w.rng)
              : w.item.Add(data_.items.rows, v, item_history_, t_.item_id_dropout(), w.rng));
      w.positive_keys.push_back(v);
      w.example_user_rows.push_back(u);
      if (t_.objective() == v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX) continue;
      for (int j = 0; j < n; ++j) {
        const bool hard = sampler_->has_hard() && Chance(w.rng, t_.hard_negative_fraction());
        int32_t neg = hard ? sampler_->SampleHard(u, w.rng) : sampler_->SampleEasy(w.rng);
        // Never one of the user's exposures (shown, not clicked): redraw a few times.
        for (int attempt = 0; attempt < 8 && IsExposed(u, neg); ++attempt) {
          neg = sampler_->SampleEasy(w.rng);
        }
        w.example_negatives.push_back(w.item.Add(data_.items.rows, neg, item_history_, t_.item_id_dropout(), w.rng));
        w.negative_keys.push_back(neg);
      }
    }
    if (t_.objective() == v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX) {
      for (int j = 0; j < n; ++j) {  // mixed negative sampling: shared easy negatives
        const int32_t neg = sampler_->SampleEasy(w.rng);
        w.shared_negatives.push_back(w.item.Add(data_.items.rows, neg, item_history_, t_.item_id_dropout(), w.rng));
        w.negative_keys.push_back(neg);
      }
    }
  }

  float LogQWeight() const { return t_.logq_correction() ? t_.logq_weight() : 0.0f; }
  bool IsExposed(int32_t user, int32_t item) const {
    return !data_.exposed_items_of_user.empty() && data_.exposed_items_of_user[user].contains(item);
  }

  // The batch's loss; its gradients go to w.user.d_out and w.item.d_out.
  float Loss(Worker& w, int batch) {
    Gather(w.user.out, w.example_user, dim_, &w.users);
    w.d_users.resize(w.users.size());
    return t_.objective() == v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX ? InBatchLoss(w, batch)
                                                                          : ExampleLoss(w, batch);
  }

  // In-batch softmax: each row against every example's positive and the shared negatives,
  // with logQ, exposure masking and the cold rows' weights.
  float InBatchLoss(Worker& w, int batch) {
    const int d = dim_;
    // Columns: every example's positive, then the shared negatives.
    std::vector<int32_t> column_slots = w.example_positive;
    column_slots.insert(column_slots.end(), w.shared_negatives.begin(), w.shared_negatives.end());
    Gather(w.item.out, column_slots, d, &w.columns);
    w.d_columns.resize(w.columns.size());
    w.column_keys = w.positive_keys;
    w.column_keys.insert(w.column_keys.end(), w.negative_keys.begin(), w.negative_keys.end());
    w.log_q_columns.clear();
    if (LogQWeight() != 0) {
      // q of an in-batch column = the item's share of the positives; of a shared
      // negative = its sampling probability.
      for (int32_t v : w.positive_keys) w.log_q_columns.push_back(LogQWeight() * data_.item_log_frequency[v]);
      for (int32_t v : w.negative_keys) {
        w.log_q_columns.push_back(LogQWeight() * static_cast<float>(std::log(sampler_->EasyProbability(v))));
      }
    }
    // Mask the columns that are the row user's exposures.
    w.masked.clear();
    if (data_.exposures_skipped > 0) {
      w.masked.assign(static_cast<size_t>(batch) * column_slots.size(), 0);
      for (int i = 0; i < batch; ++i) {
        const int32_t u = w.example_user_rows[i];
        for (size_t j = 0; j < w.column_keys.size(); ++j) {
          if (IsExposed(u, w.column_keys[j])) w.masked[i * column_slots.size() + j] = 1;
        }
      }
    }
    // Rows served through the OOV id (dropped out) get the cold-start logQ weight.
    w.row_log_q_scale.clear();
    if (LogQWeight() != 0 && t_.cold_logq_weight() != t_.logq_weight()) {
      const float cold = t_.cold_logq_weight() / t_.logq_weight();
      for (int i = 0; i < batch; ++i) {
        w.row_log_q_scale.push_back(w.user.rows.Id(w.example_user[i]) == Vocabulary::kOov ? cold : 1.0f);
      }
    }
    FillRowWeights(w, batch);
    const float loss =
        InBatchSoftmaxLoss(w.users.data(), w.columns.data(), batch, static_cast<int>(column_slots.size()), d,
                           w.column_keys, w.log_q_columns, t_.temperature(), w.d_users.data(), w.d_columns.data(),
                           w.masked, w.row_log_q_scale, w.row_weight);
    Scatter(w.d_users, w.example_user, d, &w.user.d_out);
    Scatter(w.d_columns, column_slots, d, &w.item.d_out);
    return loss;
  }

  // The objectives over (user, positive, num_negatives negatives) examples: pointwise,
  // triplet, sampled softmax.
  float ExampleLoss(Worker& w, int batch) {
    const int d = dim_;
    Gather(w.item.out, w.example_positive, d, &w.positives);
    Gather(w.item.out, w.example_negatives, d, &w.negatives);
    w.d_positives.resize(w.positives.size());
    w.d_negatives.resize(w.negatives.size());
    const ScoredExamples in{batch, d, t_.num_negatives(), w.users.data(), w.positives.data(),
                            w.negatives.data()};
    const ExampleGradients grad{w.d_users.data(), w.d_positives.data(), w.d_negatives.data()};
    float loss = 0;
    switch (t_.objective()) {
      case v1::TrainingSpec::OBJECTIVE_POINTWISE:
        loss = PointwiseLogisticLoss(in, t_.pointwise_scale(), grad);
        break;
      case v1::TrainingSpec::OBJECTIVE_TRIPLET_HINGE:
        loss = TripletHingeLoss(in, t_.margin(), grad);
        break;
      case v1::TrainingSpec::OBJECTIVE_TRIPLET_LOGISTIC:
        loss = TripletLogisticLoss(in, t_.pairwise_scale(), grad);
        break;
      default: {  // OBJECTIVE_SAMPLED_SOFTMAX
        w.log_q_positive.clear();
        w.log_q_negative.clear();
        if (LogQWeight() != 0) {
          // Rows served through the OOV id (dropped out) get the cold-start logQ weight.
          const int n = t_.num_negatives();
          for (int b = 0; b < batch; ++b) {
            const float weight = w.user.rows.Id(w.example_user[b]) == Vocabulary::kOov
                                     ? t_.cold_logq_weight()
                                     : LogQWeight();
            w.log_q_positive.push_back(
                weight * static_cast<float>(std::log(sampler_->EasyProbability(w.positive_keys[b]))));
            for (int j = 0; j < n; ++j) {
              w.log_q_negative.push_back(weight * static_cast<float>(std::log(
                                                      sampler_->EasyProbability(w.negative_keys[b * n + j]))));
            }
          }
        }
        FillRowWeights(w, batch);
        loss = SampledSoftmaxLoss(in, t_.temperature(), w.positive_keys, w.negative_keys,
                                  w.log_q_positive, w.log_q_negative, grad, w.row_weight);
      }
    }
    Scatter(w.d_users, w.example_user, d, &w.user.d_out);
    Scatter(w.d_positives, w.example_positive, d, &w.item.d_out);
    Scatter(w.d_negatives, w.example_negatives, d, &w.item.d_out);
    return loss;
  }

  const v1::TrainingSpec& t_;
  const TrainingData& data_;
  Model* model_;
  const NegativeSampler* sampler_;
  const int dim_;
  const int user_history_;  // KIND_HISTORY field of each tower, or -1
  const int item_history_;
  const std::vector<float> cold_row_weight_;  // per user row; empty = unweighted
};

double SelectionScore(const std::vector<EvalResult>& eval, int k) {
  double score = 0;
  for (const EvalResult& r : eval) {
    for (size_t j = 0; j < r.ks.size(); ++j) {
      if (r.ks[j] == k) score += r.recall[j];
    }
  }
  return score;
}

}  // namespace

UserDrop DrawUserDrop(const v1::TrainingSpec& t, Rng& rng) {
  UserDrop drop;
  drop.id = Chance(rng, t.user_id_dropout());
  drop.history = t.has_user_history_dropout() ? Chance(rng, t.user_history_dropout()) : drop.id;
  if (!drop.history && t.short_history_rate() > 0 &&
      (drop.id || ResolvedShortHistoryScope(t) == v1::TrainingSpec::SHORT_HISTORY_SCOPE_ALL) && Chance(rng, t.short_history_rate())) {
    drop.keep = 1 + static_cast<size_t>(UniformIndex(rng, static_cast<uint64_t>(t.short_history_max_length())));
    drop.from = ResolvedShortHistoryFrom(t);
    if (drop.from == v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM || drop.from == v1::TrainingSpec::SHORT_HISTORY_FROM_ANY) drop.seed = rng();
  }
  if (t.history_gap_max() > 0)
    drop.gap = static_cast<int64_t>(UniformIndex(rng, static_cast<uint64_t>(t.history_gap_max()) + 1));
  return drop;
}

void AppendTrainingUser(const EncodedTable& all, int32_t row, int history_field,
                        std::span<const int32_t> history, int32_t token, const UserDrop& drop,
                        EncodedTable* out, std::vector<int32_t>* buffer) {
  if (!drop.history && drop.keep == 0) {  // the whole history: no copy
    out->AppendRowFromReplacing(all, row, history_field, history, token);
    if (drop.id) out->SetId(out->size() - 1, Vocabulary::kOov);
    return;
  }
  buffer->clear();
  if (!drop.history) {
    for (const int32_t r : history) {
      if (token == 0 || r != token) buffer->push_back(r);
    }
    const size_t n = buffer->size();
    if (drop.keep > 0 && n > drop.keep) {
      switch (drop.from) {
        case v1::TrainingSpec::SHORT_HISTORY_FROM_FIRST:
          buffer->resize(drop.keep);
          break;
        case v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM:
        case v1::TrainingSpec::SHORT_HISTORY_FROM_ANY: {
          // Floyd's sample of keep positions out of n (splitmix64 from the drawn seed),
          // then the kept items in their order.
          SplitMix64 next(drop.seed);
          absl::InlinedVector<size_t, 16> chosen;  // keep is short: a linear search
          for (size_t j = n - drop.keep; j < n; ++j) {
            const size_t r = static_cast<size_t>(next() % (j + 1));
            const bool taken = std::find(chosen.begin(), chosen.end(), r) != chosen.end();
            chosen.push_back(taken ? j : r);
          }
          std::sort(chosen.begin(), chosen.end());
          for (size_t i = 0; i < chosen.size(); ++i) (*buffer)[i] = (*buffer)[chosen[i]];
          buffer->resize(chosen.size());
          break;
        }
        default:  // SHORT_HISTORY_FROM_LAST
          buffer->erase(buffer->begin(), buffer->end() - static_cast<ptrdiff_t>(drop.keep));
      }
    }
  }
  out->AppendRowFromReplacing(all, row, history_field, *buffer, 0);
  if (drop.id) out->SetId(out->size() - 1, Vocabulary::kOov);
}

float LearningRateScale(const v1::TrainingSpec& t, int64_t step, int64_t total_steps) {
  const double progress = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, total_steps));
  switch (ResolvedLearningRateSchedule(t)) {
    case v1::TrainingSpec::LEARNING_RATE_SCHEDULE_LINEAR_DECAY:
      return static_cast<float>(1.0 - progress);
    case v1::TrainingSpec::LEARNING_RATE_SCHEDULE_COSINE_DECAY:
      return static_cast<float>(0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    default:
      return 1.0f;
  }
}

std::vector<float> ColdRowWeights(double balance, std::span<const int32_t> train_users,
                                  size_t num_users) {
  if (balance == 0 || train_users.empty()) return {};
  std::vector<int64_t> positives(num_users, 0);
  for (const int32_t u : train_users) ++positives[u];
  const auto power = [balance](int64_t n) { return std::pow(static_cast<double>(n), -balance); };
  double mean = 0;  // of n^-b over the positives: a user with n positives is n of them
  for (const int64_t n : positives) {
    if (n > 0) mean += static_cast<double>(n) * power(n);
  }
  mean /= static_cast<double>(train_users.size());
  std::vector<float> weight(num_users, 1.0f);
  for (size_t u = 0; u < num_users; ++u) {
    if (positives[u] > 0) weight[u] = static_cast<float>(power(positives[u]) / mean);
  }
  return weight;
}

namespace {

OptimizerOptions OptimizerFor(const v1::TrainingSpec& t) {
  OptimizerOptions optimizer;
  const v1::TrainingSpec::Optimizer kind = ResolvedOptimizer(t);
  optimizer.kind = kind == v1::TrainingSpec::OPTIMIZER_ADAGRAD ? OptimizerOptions::Kind::kAdagrad
                   : kind == v1::TrainingSpec::OPTIMIZER_SGD   ? OptimizerOptions::Kind::kSgd
                                                               : OptimizerOptions::Kind::kAdam;
  optimizer.learning_rate = t.learning_rate();
  optimizer.weight_decay = t.weight_decay();
  return optimizer;
}

// Both towers, initialised from the seed, with their optimizers; FAILED_PRECONDITION when
// the bundle of such a model could not be written (checked before any training).
absl::StatusOr<Model> NewModel(const v1::TrainerConfig& config, const TrainingData& data) {
  const v1::TrainingSpec& t = config.training();
  const TowerShape user_shape = ShapeFor(config.user_tower(), data.user_encoder);
  const TowerShape item_shape = ShapeFor(config.item_tower(), data.item_encoder);
  RETURN_IF_ERROR(CheckBundleFits("user", user_shape, data.user_encoder, data.users));
  // item_embeddings.pb: the ids again and the vectors.
  int64_t item_embeddings = 4 * static_cast<int64_t>(data.items.ids.size()) * item_shape.output_dim;
  for (const std::string& id : data.items.ids) item_embeddings += static_cast<int64_t>(id.size()) + 3;
  if (item_embeddings > kMaxBundleFileBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("the item vectors (", data.items.ids.size(), " items x ", item_shape.output_dim, ") would take ~",
                     item_embeddings, " bytes, over the ", kMaxBundleFileBytes, " bytes a bundle file can hold"));
  }
  RETURN_IF_ERROR(CheckBundleFits("item", item_shape, data.item_encoder, data.items));
  Model model;
  ASSIGN_OR_RETURN(model.user, Tower::Create(user_shape, t.seed() * 2 + 1));
  ASSIGN_OR_RETURN(model.item, Tower::Create(item_shape, t.seed() * 2 + 2));
  const OptimizerOptions optimizer = OptimizerFor(t);
  model.user_optimizer = std::make_unique<Optimizer>(model.user, optimizer);
  model.item_optimizer = std::make_unique<Optimizer>(model.item, optimizer);
  return model;
}

// How the examples of an epoch are cut into steps.
struct EpochPlan {
  size_t batch_size = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  int64_t log_every = 0;  // steps between progress lines
};

// Runs one epoch's steps over `order` on every worker's thread (one thread: the caller's);
// returns the sum of the steps' losses. An exception in a worker (e.g. std::bad_alloc) is
// rethrown here after the others stop, instead of terminating the process.
double RunEpoch(const v1::TrainingSpec& t, int epoch, const EpochPlan& plan, const std::vector<int32_t>& order,
                double seconds_before, TrainingLoop& loop, std::vector<Worker>& workers, std::FILE* log) {
  const int threads = static_cast<int>(workers.size());
  const Clock::time_point epoch_start = Clock::now();
  std::atomic<int64_t> next_step{0};
  std::vector<double> loss_sums(threads, 0.0);
  std::vector<int64_t> steps_done(threads, 0);
  std::mutex log_mutex;
  const auto run = [&](int id) {
    Worker& w = workers[id];
    for (int64_t step = next_step.fetch_add(1); step < plan.steps_per_epoch; step = next_step.fetch_add(1)) {
      const size_t begin = static_cast<size_t>(step) * plan.batch_size;
      const size_t end = std::min(order.size(), begin + plan.batch_size);
      if (end - begin < 2) continue;  // a one-example batch has no in-batch negatives
      const int64_t global_step = (epoch - 1) * plan.steps_per_epoch + step;
      loss_sums[id] += loop.Step(w, order, begin, end, LearningRateScale(t, global_step, plan.total_steps));
      ++steps_done[id];
      if (log != nullptr && (step + 1) % plan.log_every == 0) {
        const int64_t done = (epoch - 1) * plan.steps_per_epoch + step + 1;
        const double elapsed = seconds_before + Seconds(epoch_start);
        const double rate = static_cast<double>(std::min(end, order.size())) / std::max(Seconds(epoch_start), 1e-9);
        std::lock_guard<std::mutex> lock(log_mutex);
        std::fprintf(log, "epoch %d/%d  step %lld/%lld  loss %.4f  %.0f examples/s  ETA %.0fs\n", epoch, t.epochs(),
                     static_cast<long long>(step + 1), static_cast<long long>(plan.steps_per_epoch),
                     loss_sums[id] / steps_done[id], rate, elapsed / done * (plan.total_steps - done));
        std::fflush(log);
      }
    }
  };
  if (threads == 1) {
    run(0);
  } else {
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const auto guarded = [&](int id) {
      try {
        run(id);
      } catch (...) {
        next_step.store(plan.steps_per_epoch);  // the others finish their step and stop
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (failure == nullptr) failure = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(guarded, i);
    for (std::thread& th : pool) th.join();
    if (failure != nullptr) std::rethrow_exception(failure);
  }
  return std::accumulate(loss_sums.begin(), loss_sums.end(), 0.0);
}

// select_best_epoch: the towers of the best evaluation so far.
struct BestEpoch {
  Tower user, item;
  double score = -1;
  int evaluations_without_improvement = 0;
};

// Evaluates the model into record->eval and, with select_best_epoch, keeps the towers of
// the best evaluation in *best (report->exported_epoch / final_eval follow it). Returns
// whether patience says to stop.
absl::StatusOr<bool> EvaluateEpoch(const v1::TrainingSpec& t, const TrainingData& data, const Model& model, bool last,
                                   EpochRecord* record, BestEpoch* best, TrainingReport* report, std::FILE* log) {
  const std::vector<int> ks(t.eval_k().begin(), t.eval_k().end());
  const std::vector<float> item_vectors = model.item.EmbedAll(data.items.rows);
  ASSIGN_OR_RETURN(record->eval, Evaluate(data, model.user, item_vectors, ks, 0, nullptr));
  const std::vector<EvalResult>& eval = record->eval;
  if (log != nullptr) {
    for (const EvalResult& r : eval) std::fprintf(log, "  eval %s\n", FormatEvalResult(r).c_str());
  }
  if (!t.select_best_epoch()) {
    if (last) report->final_eval = eval;
    return false;
  }
  bool stop = false;
  const double score = SelectionScore(eval, t.selection_k());
  if (score > best->score) {
    best->score = score;
    best->user = model.user;
    best->item = model.item;
    report->exported_epoch = record->epoch;
    report->final_eval = eval;
    best->evaluations_without_improvement = 0;
  } else if (t.patience() > 0 && ++best->evaluations_without_improvement >= t.patience()) {
    stop = true;
  }
  if (log != nullptr) {
    std::fprintf(log, "  selection: sum of Recall@%d = %.6f (best %.6f at epoch %d)\n", t.selection_k(), score,
                 best->score, report->exported_epoch);
  }
  return stop;
}

// The bundle of a trained model: config, version, encoders, towers, entities, each user's
// seen items (the server leaves them out of their answers) and the item vectors.
void ExportBundle(const v1::TrainerConfig& config, const TrainingData& data, Model model, Bundle* bundle) {
  *bundle->manifest.mutable_config() = config;
  bundle->manifest.set_model_version(NewModelVersion());
  bundle->manifest.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  bundle->user = {data.user_encoder, std::move(model.user)};
  bundle->item = {data.item_encoder, std::move(model.item)};
  bundle->users = data.users;
  bundle->items = data.items;
  bundle->seen_items = SeenItems::Of(data.train_items_of_user);
  bundle->item_vectors = bundle->item.tower.EmbedAll(bundle->items.rows);
}

}  // namespace

absl::StatusOr<TrainingReport> Train(const v1::TrainerConfig& config, const TrainingData& data,
                                     const TrainOptions& options) {
  const v1::TrainingSpec& t = config.training();
  std::FILE* log = options.log;
  ASSIGN_OR_RETURN(Model model, NewModel(config, data));
  ASSIGN_OR_RETURN(NegativeSampler sampler, NegativeSampler::Create(data, t.negative_alpha()));
  std::unique_ptr<MetricsLog> metrics;
  if (!options.metrics_path.empty()) {
    ASSIGN_OR_RETURN(metrics, MetricsLog::Open(options.metrics_path));
  }
  std::vector<Worker> workers(std::max(1, t.threads()));
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i].rng.seed(t.seed() * 7919 + 17 * i + 3);
    workers[i].user.rows = data.user_encoder.NewTable();
    workers[i].item.rows = data.item_encoder.NewTable();
  }
  TrainingLoop loop(config, data, &model, &sampler);
  Rng shuffle_rng(t.seed());
  std::vector<int32_t> order(data.train_users.size());
  std::iota(order.begin(), order.end(), 0);
  EpochPlan plan;
  plan.batch_size = static_cast<size_t>(t.batch_size());
  plan.steps_per_epoch = static_cast<int64_t>((order.size() + plan.batch_size - 1) / plan.batch_size);
  plan.log_every = t.log_every_steps() > 0 ? t.log_every_steps() : std::max<int64_t>(1, plan.steps_per_epoch / 10);
  plan.total_steps = plan.steps_per_epoch * t.epochs();

  TrainingReport report;
  BestEpoch best;
  double train_seconds = 0;
  int64_t examples = 0;
  for (int epoch = 1; epoch <= t.epochs(); ++epoch) {
    const bool mine = t.hard_negative_fraction() > 0 && epoch > 1 &&
                      (epoch - 1) % std::max(1, t.hard_negative_every_epochs()) == 0;
    if (mine) {
      const std::vector<float> item_vectors = model.item.EmbedAll(data.items.rows);
      RETURN_IF_ERROR(sampler.MineHard(data, model.user, item_vectors, t.hard_negative_pool()));
    }
    Shuffle(order, shuffle_rng);
    const Clock::time_point epoch_start = Clock::now();
    const double loss_sum = RunEpoch(t, epoch, plan, order, train_seconds, loop, workers, log);
    const double epoch_seconds = Seconds(epoch_start);
    train_seconds += epoch_seconds;
    examples += static_cast<int64_t>(order.size());

    EpochRecord record;
    record.epoch = epoch;
    record.loss = loss_sum / std::max<int64_t>(1, plan.steps_per_epoch);
    record.seconds = epoch_seconds;
    record.examples_per_second = order.size() / std::max(epoch_seconds, 1e-9);
    report.final_loss = record.loss;
    if (log != nullptr) {
      std::fprintf(log, "epoch %d/%d done  loss %.4f  %.0f examples/s  %.2fs\n", epoch, t.epochs(), record.loss,
                   record.examples_per_second, epoch_seconds);
    }
    const bool last = epoch == t.epochs();
    const bool periodic = t.eval_every_epochs() > 0 && epoch % t.eval_every_epochs() == 0;
    bool stop = false;
    if (!data.eval_sets.empty() && (last || periodic)) {
      ASSIGN_OR_RETURN(stop, EvaluateEpoch(t, data, model, last, &record, &best, &report, log));
    }
    if (metrics != nullptr) RETURN_IF_ERROR(metrics->Append(record));
    report.history.push_back(std::move(record));
    if (stop) {
      if (log != nullptr) std::fprintf(log, "early stop: no improvement in %d evaluations\n", t.patience());
      break;
    }
  }
  report.examples_per_second = examples / std::max(train_seconds, 1e-9);
  if (t.select_best_epoch() && best.score >= 0) {
    model.user = std::move(best.user);
    model.item = std::move(best.item);
  } else {
    report.exported_epoch = report.history.back().epoch;
  }
  ExportBundle(config, data, std::move(model), &report.bundle);
  return report;
}

}  // namespace twotower
