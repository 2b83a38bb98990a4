// The offline model: what a server of a bundle must answer, computed from the bundle
// (its towers, encoded users and catalogue) without the serving code, for the tests that
// call a server (in-process or a real process) and check its answers.
#ifndef TWOTOWER_TESTS_OFFLINE_MODEL_H_
#define TWOTOWER_TESTS_OFFLINE_MODEL_H_

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "bundle/bundle.h"
#include "features/vocabulary.h"
#include "gtest/gtest.h"
#include "model/tower.h"
#include "tests/status_matchers.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower::testing {

inline constexpr float kScoreTolerance = 1e-4f;

// Known users with their own id embedding (in the id vocabulary and in users.pb).
inline std::vector<std::string> KnownUsers(const Bundle& bundle, size_t count) {
  std::vector<std::string> users;
  for (const std::string& id : bundle.users.ids) {
    if (bundle.user.encoder.ids().Lookup(id) != Vocabulary::kOov) users.push_back(id);
    if (users.size() == count) break;
  }
  return users;
}

// Scores of every catalogue item for the user tower input `row`, by brute force.
inline std::map<std::string, float> OfflineScores(const Bundle& bundle, const EncodedTable& row) {
  const int dim = bundle.embedding_dim();
  std::vector<float> user(dim);
  TowerActivations activations;
  bundle.user.tower.Forward(row, &activations, user.data());
  std::map<std::string, float> scores;
  for (size_t i = 0; i < bundle.items.ids.size(); ++i) {
    double dot = 0.0;
    for (int d = 0; d < dim; ++d) {
      dot += static_cast<double>(user[d]) * bundle.item_vectors[i * dim + d];
    }
    scores.emplace(bundle.items.ids[i], static_cast<float>(dot));
  }
  return scores;
}

// The tower input the server should build for `request` (the documented rules).
inline EncodedTable OfflineUserRow(const Bundle& bundle, const v1::RetrieveRequest& request) {
  EncodedTable row = bundle.user.encoder.NewTable();
  if (!request.user_features().empty()) {
    absl::StatusOr<std::vector<RawValue>> values =
        bundle.user.encoder.FromRequest(request.user_features());
    EXPECT_THAT(values, IsOk());
    if (values.ok()) bundle.user.encoder.Encode(request.user_id(), &*values, &row);
    return row;
  }
  const auto it = std::find(bundle.users.ids.begin(), bundle.users.ids.end(), request.user_id());
  if (it != bundle.users.ids.end()) {
    row.AppendRowFrom(bundle.users.rows, static_cast<int>(it - bundle.users.ids.begin()));
  } else {
    bundle.user.encoder.Encode(request.user_id(), nullptr, &row);
  }
  return row;
}

// Whether catalogue item `id` passes every filter of `request`, computed independently
// of the server from the bundle's encoded catalogue.
inline bool PassesFilters(const Bundle& bundle, const std::string& id, const v1::RetrieveRequest& request) {
  const auto row = std::find(bundle.items.ids.begin(), bundle.items.ids.end(), id) - bundle.items.ids.begin();
  const FeatureEncoder& encoder = bundle.item.encoder;
  for (const v1::ItemFilter& filter : request.filters()) {
    bool pass = false;
    for (int f = 1; f < encoder.num_fields(); ++f) {
      if (encoder.FieldSpec(f).name() != filter.feature()) continue;
      for (const std::string& value : filter.any_of()) {
        const int32_t token = encoder.FieldVocabulary(f).Lookup(value);
        for (int32_t have : bundle.items.rows.Field(static_cast<int>(row), f)) {
          pass = pass || (token != Vocabulary::kOov && have == token);
        }
      }
    }
    if (!pass) return false;
  }
  return true;
}

// The items a known user interacted with in training (the bundle's seen sets): what
// Retrieve leaves out of that user's answers unless include_history_items.
inline std::set<std::string> SeenItemsOf(const Bundle& bundle, const std::string& user) {
  std::set<std::string> ids;
  const auto it = std::find(bundle.users.ids.begin(), bundle.users.ids.end(), user);
  if (it == bundle.users.ids.end()) return ids;
  std::vector<int32_t> rows;
  bundle.seen_items.AppendRowsOf(it - bundle.users.ids.begin(), &rows);
  for (const int32_t row : rows) ids.insert(bundle.items.ids[row]);
  return ids;
}

// Checks `response` is the exact top-k of the offline model. Ties make "equal ids" too
// strict (two items within float noise may come in either order), so it checks what
// defines a correct top-k: every position's score equals the offline k-th best score at
// that position, every returned item's score is its offline score, no item twice, none
// excluded. When scores are distinct this is the same as equal ids.
inline void ExpectOfflineTopK(const Bundle& bundle, const v1::RetrieveRequest& request,
                       const v1::RetrieveResponse& response) {
  const std::map<std::string, float> scores = OfflineScores(bundle, OfflineUserRow(bundle, request));
  std::set<std::string> excluded(request.exclude_item_ids().begin(), request.exclude_item_ids().end());
  if (!request.include_history_items()) excluded.merge(SeenItemsOf(bundle, request.user_id()));
  std::vector<float> expected;
  for (const auto& [id, score] : scores) {
    if (!excluded.contains(id) && PassesFilters(bundle, id, request)) expected.push_back(score);
  }
  std::sort(expected.begin(), expected.end(), std::greater<>());
  expected.resize(std::min<size_t>(expected.size(), request.k()));

  ASSERT_EQ(response.items_size(), static_cast<int>(expected.size()));
  std::set<std::string> seen;
  for (int i = 0; i < response.items_size(); ++i) {
    const v1::ScoredItem& item = response.items(i);
    EXPECT_NEAR(item.score(), expected[i], kScoreTolerance) << "rank " << i + 1;
    const auto it = scores.find(item.item_id());
    ASSERT_NE(it, scores.end()) << item.item_id() << " is not in the catalogue";
    EXPECT_NEAR(item.score(), it->second, kScoreTolerance) << item.item_id();
    EXPECT_TRUE(seen.insert(item.item_id()).second) << item.item_id() << " returned twice";
    EXPECT_FALSE(excluded.contains(item.item_id())) << item.item_id() << " was excluded";
    EXPECT_TRUE(PassesFilters(bundle, item.item_id(), request)) << item.item_id() << " fails a filter";
    if (i > 0) {
      EXPECT_GE(response.items(i - 1).score(), item.score()) << "rank " << i + 1;
    }
  }
}

inline v1::RetrieveRequest KnownUserRequest(const std::string& user, int k) {
  v1::RetrieveRequest request;
  request.set_user_id(user);
  request.set_k(k);
  return request;
}

// A user the model never saw, described by features of configs/synthetic.textproto.
inline v1::RetrieveRequest ColdUserRequest(const std::string& user, int k) {
  v1::RetrieveRequest request = KnownUserRequest(user, k);
  auto& features = *request.mutable_user_features();
  features["segment"].set_categorical("s1");
  features["age"].set_numeric(31);
  features["region"].set_categorical("r2");
  features["interests"].mutable_multi_hot()->add_values("g0");
  features["interests"].mutable_multi_hot()->add_values("g3");
  return request;
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_OFFLINE_MODEL_H_
