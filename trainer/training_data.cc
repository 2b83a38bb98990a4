#include "trainer/training_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dataset/feature_table.h"
#include "dataset/interactions.h"
#include "util/config_enums.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

absl::StatusOr<FeatureTable> ReadOptionalFeatureTable(const v1::FeatureTableSpec& spec,
                                                      const std::string& data_dir) {
  if (!spec.has_table()) return FeatureTable{};
  return ReadFeatureTable(spec, data_dir);
}

// Encodes every row of `table`, then the ids in `extra` that the table lacks (with no
// features). Returns the entities and the id -> row map.
EncodedEntities EncodeEntities(const FeatureEncoder& encoder, const FeatureTable& table,
                               const std::vector<std::string>& extra, int* missing,
                               absl::flat_hash_map<std::string, int32_t>* row_of) {
  EncodedEntities out{{}, encoder.NewTable()};
  for (size_t r = 0; r < table.ids.size(); ++r) {
    row_of->emplace(table.ids[r], static_cast<int32_t>(out.ids.size()));
    out.ids.push_back(table.ids[r]);
    encoder.Encode(table.ids[r], &table.values[r], &out.rows);
  }
  *missing = 0;
  for (const std::string& id : extra) {
    if (row_of->contains(id)) continue;
    row_of->emplace(id, static_cast<int32_t>(out.ids.size()));
    out.ids.push_back(id);
    encoder.Encode(id, nullptr, &out.rows);
    ++*missing;
  }
  return out;
}

}  // namespace

void SortIdsLikeProtocol(std::vector<std::string>* ids) {
  bool numeric = true;
  for (const std::string& id : *ids) {
    int64_t v;
    if (!absl::SimpleAtoi(id, &v)) {
      numeric = false;
      break;
    }
  }
  if (numeric) {
    std::sort(ids->begin(), ids->end(), [](const std::string& a, const std::string& b) {
      int64_t x = 0, y = 0;
      (void)absl::SimpleAtoi(a, &x);
      (void)absl::SimpleAtoi(b, &y);
      return x < y;
    });
  } else {
    std::sort(ids->begin(), ids->end());
  }
}

namespace {
// Each owner's distinct partners (a user's items, an item's users) in time order, by first
// interaction, and per interaction how many distinct partners its owner had before it.
struct HistoryOrder {
  absl::flat_hash_map<std::string, std::vector<std::string>> partners;
  std::vector<int64_t> preceding;
};

HistoryOrder OrderHistories(const std::vector<std::string>& owners,
                            const std::vector<std::string>& others,
                            const std::vector<int64_t>& timestamps) {
  std::vector<size_t> order(owners.size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (!timestamps.empty()) {
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return timestamps[a] < timestamps[b]; });
  }
  HistoryOrder out;
  out.preceding.resize(owners.size());
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> seen;
  for (const size_t i : order) {
    std::vector<std::string>& list = out.partners[owners[i]];
    out.preceding[i] = static_cast<int64_t>(list.size());
    if (seen[owners[i]].insert(others[i]).second) list.push_back(others[i]);
  }
  return out;
}

// Index of the KIND_HISTORY feature in `spec`, or -1.
int HistoryFeature(const v1::FeatureTableSpec& spec) {
  for (int f = 0; f < spec.features_size(); ++f) {
    if (spec.features(f).kind() == v1::FeatureSpec::KIND_HISTORY) return f;
  }
  return -1;
}

// Moves each entity's whole history out of `order` into the KIND_HISTORY field of `table`
// (adding rows for entities it lacks); returns the field's index in the spec, or -1
// without one.
int FillHistory(const v1::FeatureTableSpec& spec, HistoryOrder* order,
                const std::vector<std::string>& owners, FeatureTable* table) {
  const int history = HistoryFeature(spec);
  if (history < 0) return -1;
  absl::flat_hash_set<std::string> in_table(table->ids.begin(), table->ids.end());
  for (const std::string& owner : owners) {
    if (in_table.insert(owner).second) {
      table->ids.push_back(owner);
      table->values.emplace_back(spec.features_size());
    }
  }
  for (size_t r = 0; r < table->ids.size(); ++r) {
    if (const auto it = order->partners.find(table->ids[r]); it != order->partners.end()) {
      table->values[r][history].tokens = std::move(it->second);
    }
  }
  order->partners.clear();
  return history;
}

// The stored history (serving, evaluation, HISTORY_CONTEXT_LEAVE_ONE_OUT training): the last
// history_length partners.
void KeepRecentHistory(const v1::FeatureSpec& feature, int history, FeatureTable* table) {
  for (auto& values : table->values) {
    std::vector<std::string>& tokens = values[history].tokens;
    tokens.erase(tokens.begin(),
                 tokens.begin() + static_cast<ptrdiff_t>(RecentHistoryStart(tokens.size(), feature.history_length())));
  }
}

// HISTORY_CONTEXT_PRECEDING: per training interaction, the (last history_length) partners
// its owner had before it, as tokens of the encoder's KIND_HISTORY field, from the whole
// histories in `table` (spec feature `history`) before KeepRecentHistory cuts them.
TrainingData::PrecedingHistory PrecedingTokens(const v1::FeatureSpec& feature, const HistoryOrder& order,
                                               const std::vector<std::string>& owners,
                                               const FeatureTable& table, int history,
                                               const FeatureEncoder& encoder) {
  const int field = encoder.HistoryField();
  TrainingData::PrecedingHistory out;
  // owner -> [offset, end) of its partners
  absl::flat_hash_map<std::string, std::pair<int64_t, int64_t>> start;
  for (size_t r = 0; r < table.ids.size(); ++r) {
    const int64_t begin = static_cast<int64_t>(out.tokens.size());
    for (const std::string& partner : table.values[r][history].tokens) {
      out.tokens.push_back(encoder.TokenRow(field, partner));
    }
    start[table.ids[r]] = {begin, static_cast<int64_t>(out.tokens.size())};
  }
  const int64_t keep = feature.history_length();
  out.length = keep;
  out.begin.resize(owners.size());
  out.end.resize(owners.size());
  out.start.resize(owners.size());
  out.stop.resize(owners.size());
  for (size_t i = 0; i < owners.size(); ++i) {
    const auto [at, stop] = start.at(owners[i]);
    const int64_t before = order.preceding[i];
    out.begin[i] = at + static_cast<int64_t>(RecentHistoryStart(static_cast<size_t>(before), keep));
    out.end[i] = at + before;
    out.start[i] = at;
    out.stop[i] = stop;
  }
  return out;
}

// skip_bad_rows: say how many rows were left out, and the first few reasons.
void ReportSkipped(const std::vector<std::string>& skipped, const std::string& path, std::FILE* log) {
  if (skipped.empty()) return;
  std::fprintf(log, "warning: %s: skipped %zu bad rows (skip_bad_rows), e.g. %s\n", path.c_str(),
               skipped.size(), skipped.front().c_str());
}

// Drops the rows labelled 0 (exposures: neither positives nor negatives) from `log`
// before anything counts them; their (user, item) pairs go to *dropped_pairs when given.
// Returns how many were dropped.
int64_t KeepPositives(InteractionLog& log, std::vector<std::pair<std::string, std::string>>* dropped_pairs) {
  int64_t dropped = 0;
  if (log.labels.empty()) return dropped;
  InteractionLog kept;
  for (size_t i = 0; i < log.size(); ++i) {
    if (log.labels[i] == 0) {
      ++dropped;
      if (dropped_pairs != nullptr) dropped_pairs->emplace_back(log.users[i], log.items[i]);
      continue;
    }
    kept.users.push_back(std::move(log.users[i]));
    kept.items.push_back(std::move(log.items[i]));
    if (!log.timestamps.empty()) kept.timestamps.push_back(log.timestamps[i]);
  }
  log = std::move(kept);
  return dropped;
}

// Every table the config names, read (rows skipped by skip_bad_rows reported to `log`).
struct RawTables {
  InteractionLog train;                                      // positives only
  std::vector<std::pair<std::string, std::string>> exposed;  // (user, item) of training exposures
  FeatureTable users;
  FeatureTable items;
  std::vector<InteractionLog> eval_logs;       // per eval set, positives only
  std::vector<InteractionLog> eval_histories;  // per eval set; empty without a history table
};

absl::StatusOr<RawTables> ReadTables(const v1::DataSpec& spec, const std::string& data_dir, std::FILE* log) {
  RawTables t;
  ASSIGN_OR_RETURN(t.train, ReadInteractions(spec.train(), data_dir));
  KeepPositives(t.train, &t.exposed);
  if (t.train.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(spec.train().table().path(), ": no training interactions"));
  }
  ReportSkipped(t.train.skipped, spec.train().table().path(), log);
  ASSIGN_OR_RETURN(t.users, ReadOptionalFeatureTable(spec.users(), data_dir));
  ReportSkipped(t.users.skipped, spec.users().table().path(), log);
  ASSIGN_OR_RETURN(t.items, ReadOptionalFeatureTable(spec.items(), data_dir));
  ReportSkipped(t.items.skipped, spec.items().table().path(), log);
  for (const v1::EvalSetSpec& eval : spec.eval()) {
    ASSIGN_OR_RETURN(InteractionLog held_out, ReadInteractions(eval.interactions(), data_dir));
    ReportSkipped(held_out.skipped, eval.interactions().table().path(), log);
    KeepPositives(held_out, nullptr);
    t.eval_logs.push_back(std::move(held_out));
    InteractionLog history;
    if (eval.has_history()) {
      ASSIGN_OR_RETURN(history, ReadInteractions(eval.history(), data_dir));
      ReportSkipped(history.skipped, eval.history().table().path(), log);
    }
    t.eval_histories.push_back(std::move(history));
  }
  return t;
}

// Fits both encoders on the tables and encodes every user and item: KIND_HISTORY features
// get each entity's training interactions as tokens (all of them, so the vocabulary
// covers what HISTORY_CONTEXT_PRECEDING examples see; cut to history_length once fitted),
// and entities of the interactions that a table lacks become rows too. Returns the user
// history feature's index (-1: none); t->users keeps the cut histories.
absl::StatusOr<int> FitAndEncode(const v1::TrainerConfig& config, RawTables* t, TrainingData* data, std::FILE* log) {
  const v1::DataSpec& spec = config.data();
  const InteractionLog& train = t->train;
  HistoryOrder user_order = HistoryFeature(spec.users()) < 0
                                ? HistoryOrder{}
                                : OrderHistories(train.users, train.items, train.timestamps);
  HistoryOrder item_order = HistoryFeature(spec.items()) < 0
                                ? HistoryOrder{}
                                : OrderHistories(train.items, train.users, train.timestamps);
  // Rows read from the tables; FillHistory and EncodeEntities append the entities they lack.
  const size_t user_rows_read = t->users.ids.size(), item_rows_read = t->items.ids.size();
  const int user_history = FillHistory(spec.users(), &user_order, train.users, &t->users);
  const int item_history = FillHistory(spec.items(), &item_order, train.items, &t->items);

  // Ids get a vocabulary row only when seen in training interactions.
  absl::flat_hash_map<std::string, int64_t> user_counts, item_counts;
  for (size_t i = 0; i < train.size(); ++i) {
    ++user_counts[train.users[i]];
    ++item_counts[train.items[i]];
  }
  const std::vector<v1::FeatureSpec> user_schema(spec.users().features().begin(), spec.users().features().end());
  const std::vector<v1::FeatureSpec> item_schema(spec.items().features().begin(), spec.items().features().end());
  ASSIGN_OR_RETURN(data->user_encoder,
                   FeatureEncoder::Fit(user_schema, t->users, user_counts, config.user_tower().id_min_count()));
  ASSIGN_OR_RETURN(data->item_encoder,
                   FeatureEncoder::Fit(item_schema, t->items, item_counts, config.item_tower().id_min_count()));

  if (user_history >= 0 &&
      ResolvedHistoryContext(spec.users().features(user_history)) == v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING) {
    data->user_preceding = PrecedingTokens(spec.users().features(user_history), user_order, train.users, t->users,
                                           user_history, data->user_encoder);
  }
  user_order = {};
  item_order = {};
  if (user_history >= 0) KeepRecentHistory(spec.users().features(user_history), user_history, &t->users);
  if (item_history >= 0) KeepRecentHistory(spec.items().features(item_history), item_history, &t->items);

  // Users: the feature table, then anyone in training or evaluation interactions.
  std::vector<std::string> extra_users = train.users;
  for (const InteractionLog& held_out : t->eval_logs) {
    extra_users.insert(extra_users.end(), held_out.users.begin(), held_out.users.end());
  }
  int added = 0;
  data->users = EncodeEntities(data->user_encoder, t->users, extra_users, &added, &data->user_row);
  // The catalogue: the item table, plus training items it lacks. Held-out items outside
  // both cannot be recommended and count as misses.
  data->items = EncodeEntities(data->item_encoder, t->items, train.items, &added, &data->item_row);
  const int users_without_features = static_cast<int>(data->users.ids.size() - user_rows_read);
  const int items_without_features = static_cast<int>(data->items.ids.size() - item_rows_read);
  if (spec.users().has_table() && users_without_features > 0) {
    int trained = 0;
    for (size_t r = user_rows_read; r < data->users.ids.size(); ++r) {
      trained += user_counts.contains(data->users.ids[r]) ? 1 : 0;
    }
    std::fprintf(log,
                 "warning: %d users in interactions have no row in %s: %d of them are in the training "
                 "interactions (served by their id embedding, without features), %d only in eval sets "
                 "(served as new users without features, from the unknown-user row)\n",
                 users_without_features, spec.users().table().path().c_str(), trained,
                 users_without_features - trained);
  }
  if (spec.items().has_table() && items_without_features > 0) {
    std::fprintf(log,
                 "warning: %d training items have no row in %s (added to the catalogue with "
                 "no features)\n",
                 items_without_features, spec.items().table().path().c_str());
  }
  if (const int h = data->user_encoder.HistoryField(); h > 0) {
    for (const std::string& id : data->items.ids) {
      data->history_token_of_item.push_back(data->user_encoder.TokenRow(h, id));
    }
  }
  if (const int h = data->item_encoder.HistoryField(); h > 0) {
    for (const std::string& id : data->users.ids) {
      data->history_token_of_user.push_back(data->item_encoder.TokenRow(h, id));
    }
  }
  return user_history;
}

// The training interactions as encoded rows: the (user, item) pairs, each user's items,
// the exposures never drawn as that user's negatives, and each item's log frequency.
void IndexTrainingInteractions(const RawTables& t, TrainingData* data) {
  const InteractionLog& train = t.train;
  data->train_items_of_user.resize(data->users.ids.size());
  data->train_users.reserve(train.size());
  data->train_items.reserve(train.size());
  std::vector<int64_t> frequency(data->items.ids.size(), 0);
  for (size_t i = 0; i < train.size(); ++i) {
    const int32_t u = data->user_row.at(train.users[i]);
    const int32_t v = data->item_row.at(train.items[i]);
    data->train_users.push_back(u);
    data->train_items.push_back(v);
    data->train_items_of_user[u].insert(v);
    ++frequency[v];
  }
  data->exposed_items_of_user.resize(data->users.ids.size());
  for (const auto& [user, item] : t.exposed) {
    const auto u = data->user_row.find(user);
    const auto v = data->item_row.find(item);
    if (u != data->user_row.end() && v != data->item_row.end() &&
        !data->train_items_of_user[u->second].contains(v->second)) {
      data->exposed_items_of_user[u->second].insert(v->second);
    }
  }
  const double total = static_cast<double>(train.size());
  data->item_log_frequency.resize(frequency.size());
  for (size_t v = 0; v < frequency.size(); ++v) {
    data->item_log_frequency[v] = static_cast<float>(std::log(std::max<double>(frequency[v], 0.5) / total));
  }
}

// A request-time history table as each user's items, most recent last (by timestamp,
// ties in file order; without timestamps, file order).
absl::flat_hash_map<std::string, std::vector<std::string>> HistoriesByUser(const InteractionLog& h) {
  std::vector<size_t> order(h.size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (!h.timestamps.empty()) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return h.timestamps[a] < h.timestamps[b]; });
  }
  absl::flat_hash_map<std::string, std::vector<std::string>> history_of;
  for (const size_t i : order) history_of[h.users[i]].push_back(h.items[i]);
  return history_of;
}

// Eval set e: each user's held-out items the model can still find (not trained on, not in
// the request-time history), in the protocol's user order; with a history table, each
// user encoded as the server encodes a request with the user's features and that history.
EvalSet BuildEvalSet(const v1::DataSpec& spec, size_t e, const RawTables& t, int user_history, const TrainingData& data,
                     std::FILE* log) {
  const InteractionLog& held_out = t.eval_logs[e];
  const bool has_history = spec.eval(e).has_history();
  const absl::flat_hash_map<std::string, std::vector<std::string>> history_of = HistoriesByUser(t.eval_histories[e]);
  const auto in_history = [&](const std::string& user, const std::string& item) {
    const auto it = history_of.find(user);
    return it != history_of.end() && std::find(it->second.begin(), it->second.end(), item) != it->second.end();
  };
  absl::flat_hash_map<std::string, std::pair<absl::flat_hash_set<int32_t>, int>> by_user;
  int outside_catalogue = 0;
  for (size_t i = 0; i < held_out.size(); ++i) {
    // An item of the user's request-time history is seen, not a target (as eval.py).
    if (has_history && in_history(held_out.users[i], held_out.items[i])) continue;
    auto& [relevant, unreachable] = by_user[held_out.users[i]];
    const int32_t u = data.user_row.at(held_out.users[i]);
    const auto it = data.item_row.find(held_out.items[i]);
    if (it == data.item_row.end()) {
      ++unreachable;
      ++outside_catalogue;
    } else if (!data.train_items_of_user[u].contains(it->second)) {
      relevant.insert(it->second);
    }
  }
  if (outside_catalogue > 0) {
    std::fprintf(log,
                 "warning: eval set %s: %d held-out interactions name items outside the "
                 "catalogue (counted as misses)\n",
                 spec.eval(e).name().c_str(), outside_catalogue);
  }
  std::vector<std::string> ids;
  for (const auto& [id, unused] : by_user) ids.push_back(id);
  SortIdsLikeProtocol(&ids);
  absl::flat_hash_map<std::string, size_t> table_row;  // user id -> row of t.users
  if (has_history) {
    for (size_t r = 0; r < t.users.ids.size(); ++r) table_row.emplace(t.users.ids[r], r);
  }
  EvalSet set;
  set.name = spec.eval(e).name();
  set.has_history = has_history;
  if (has_history) set.request_rows = data.user_encoder.NewTable();
  for (const std::string& id : ids) {
    auto& [relevant, unreachable] = by_user[id];
    if (relevant.empty() && unreachable == 0) continue;  // nothing left to find
    const int32_t u = data.user_row.at(id);
    if (has_history) {
      // As the server encodes a request with the user's features and this history.
      const auto row = table_row.find(id);
      std::vector<RawValue> values =
          row != table_row.end() ? t.users.values[row->second] : std::vector<RawValue>(spec.users().features_size());
      absl::flat_hash_set<int32_t> excluded = data.train_items_of_user[u];
      const auto history = history_of.find(id);
      if (user_history >= 0) values[user_history].tokens.clear();
      if (history != history_of.end()) {
        if (user_history >= 0) values[user_history].tokens = history->second;
        for (const std::string& item : history->second) {
          if (const auto v = data.item_row.find(item); v != data.item_row.end()) excluded.insert(v->second);
        }
      }
      for (const int32_t v : excluded) relevant.erase(v);
      if (relevant.empty() && unreachable == 0) continue;  // everything left was in the history
      data.user_encoder.Encode(id, &values, &set.request_rows);
      set.excluded.push_back(std::move(excluded));
    }
    set.user_rows.push_back(u);
    set.relevant.push_back(std::move(relevant));
    set.unreachable.push_back(unreachable);
  }
  return set;
}

}  // namespace

absl::StatusOr<TrainingData> LoadTrainingData(const v1::TrainerConfig& config, const std::string& data_dir,
                                              std::FILE* log) {
  const v1::DataSpec& spec = config.data();
  ASSIGN_OR_RETURN(RawTables tables, ReadTables(spec, data_dir, log));
  TrainingData data;
  data.exposures_skipped = static_cast<int64_t>(tables.exposed.size());
  if (data.exposures_skipped > 0) {
    std::fprintf(log, "note: %lld exposure rows (label 0) left out: not positives, not negatives\n",
                 static_cast<long long>(data.exposures_skipped));
  }
  ASSIGN_OR_RETURN(const int user_history, FitAndEncode(config, &tables, &data, log));
  IndexTrainingInteractions(tables, &data);
  for (size_t e = 0; e < tables.eval_logs.size(); ++e) {
    data.eval_sets.push_back(BuildEvalSet(spec, e, tables, user_history, data, log));
  }
  return data;
}

}  // namespace twotower
