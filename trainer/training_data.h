// The trainer's view of the data: tables read per the config, encoders fitted, and every
// user / item / interaction turned into row numbers of the encoded tables.
#ifndef TWOTOWER_TRAINER_TRAINING_DATA_H_
#define TWOTOWER_TRAINER_TRAINING_DATA_H_

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "bundle/bundle.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

struct EvalSet {
  std::string name;
  // Users to evaluate, in the protocol's order (numeric ids ascending when all ids are
  // integers, else lexicographic), as rows of TrainingData::users.
  std::vector<int32_t> user_rows;
  // Per evaluated user: held-out items (catalogue rows) minus the user's training items.
  std::vector<absl::flat_hash_set<int32_t>> relevant;
  // Per evaluated user: held-out items outside the catalogue (count as misses).
  std::vector<int> unreachable;
  // A set with a request-time history (EvalSetSpec.history): per evaluated user, the user
  // tower's input as the server encodes a request carrying the user's feature-table row
  // and that history (one row per user, in user_rows order), and the catalogue rows
  // excluded from its ranking (its training items and the history's items). Both empty
  // for a set without a history: users are ranked from their stored rows, excluding
  // their training items.
  bool has_history = false;
  EncodedTable request_rows;
  std::vector<absl::flat_hash_set<int32_t>> excluded;
};

struct TrainingData {
  FeatureEncoder user_encoder;
  FeatureEncoder item_encoder;
  EncodedEntities users;  // feature-table users, then users only seen in interactions
  EncodedEntities items;  // the catalogue: item table rows, then items only in interactions
  absl::flat_hash_map<std::string, int32_t> user_row;
  absl::flat_hash_map<std::string, int32_t> item_row;

  // Positive training interactions as (user row, item row).
  std::vector<int32_t> train_users;
  std::vector<int32_t> train_items;
  // Training items of each user row (excluded when ranking for that user).
  std::vector<absl::flat_hash_set<int32_t>> train_items_of_user;
  // log of each catalogue item's frequency among the training positives (logQ correction);
  // items never seen get log(0.5 / total).
  std::vector<float> item_log_frequency;

  // KIND_HISTORY features (leave-one-out in training): the history token of each item row in
  // the user tower's history vocabulary, and of each user row in the item tower's; empty
  // without a KIND_HISTORY feature on that side.
  std::vector<int32_t> history_token_of_item;
  std::vector<int32_t> history_token_of_user;
  // User KIND_HISTORY with history_context HISTORY_CONTEXT_PRECEDING (user tower only, see
  // config.cc): what training example e (an index into train_users / train_items) sees as
  // its history, as history tokens: user_preceding.Of(e) = tokens[begin[e], end[e]). Empty
  // otherwise. user_preceding.Timeline(e): all the user's partners before example e, from
  // its first; All(e): all of them (what TrainingSpec.short_history_from
  // SHORT_HISTORY_FROM_FIRST, _RANDOM, _ANY cut from).
  struct PrecedingHistory {
    std::vector<int32_t> tokens;  // each entity's partners in time order, concatenated
    std::vector<int64_t> begin, end;
    std::vector<int64_t> start;  // per example: where its owner's partners begin in tokens
    std::vector<int64_t> stop;   // ... and where they end
    std::span<const int32_t> Of(size_t example) const {
      return {tokens.data() + begin[example], static_cast<size_t>(end[example] - begin[example])};
    }
    std::span<const int32_t> Timeline(size_t example) const {
      return {tokens.data() + start[example], static_cast<size_t>(end[example] - start[example])};
    }
    // Of(e) and Timeline(e) as they were `gap` partners earlier (TrainingSpec.
    // history_gap_max): the history ends `gap` partners before the example.
    std::span<const int32_t> Of(size_t example, int64_t gap) const {
      const int64_t last = std::max(start[example], end[example] - gap);
      const int64_t first = length > 0 ? std::max(start[example], last - length) : start[example];
      return {tokens.data() + first, static_cast<size_t>(last - first)};
    }
    std::span<const int32_t> Timeline(size_t example, int64_t gap) const {
      const int64_t last = std::max(start[example], end[example] - gap);
      return {tokens.data() + start[example], static_cast<size_t>(last - start[example])};
    }
    int64_t length = 0;  // the feature's history_length (0 = all)
    // All the owner's partners, before and after example e.
    std::span<const int32_t> All(size_t example) const {
      return {tokens.data() + start[example], static_cast<size_t>(stop[example] - start[example])};
    }
    bool empty() const { return begin.empty(); }
  };
  PrecedingHistory user_preceding;

  std::vector<EvalSet> eval_sets;
  // Training rows marked as exposures (shown, not clicked): never positives, and never
  // that user's negatives (see docs/TRAINING.md).
  int64_t exposures_skipped = 0;
  std::vector<absl::flat_hash_set<int32_t>> exposed_items_of_user;  // per user row
};

// Reads every table of `config` (relative paths against `data_dir`) and encodes it.
// Warnings (e.g. interactions naming users without a feature row) go to `log`.
absl::StatusOr<TrainingData> LoadTrainingData(const v1::TrainerConfig& config,
                                              const std::string& data_dir, std::FILE* log);

// Orders ids as the evaluation protocol does: numerically when all are integers.
void SortIdsLikeProtocol(std::vector<std::string>* ids);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_TRAINING_DATA_H_
