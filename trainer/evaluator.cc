#include "trainer/evaluator.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "index/item_index.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

// Ranks with inner products of user vectors (from `embed_users`, one per user row of the
// set) and `item_vectors`, through the same index code the server uses.
template <typename EmbedUsers>
absl::StatusOr<std::vector<EvalResult>> EvaluateVectors(const TrainingData& data,
                                                        EmbedUsers embed_users,
                                                        const std::vector<float>& item_vectors,
                                                        int dim, const std::vector<int>& ks,
                                                        int recs_depth, std::vector<std::string>* recs) {
  ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> index,
                   ItemIndex::Build(data.items.ids, item_vectors, dim, IndexOptions{}));
  int depth = std::max(10, recs != nullptr ? recs_depth : 0);
  for (int k : ks) depth = std::max(depth, k);

  std::vector<EvalResult> results;
  if (recs != nullptr) recs->assign(data.eval_sets.size(), std::string());
  for (const EvalSet& set : data.eval_sets) {
    EvalResult result;
    result.name = set.name;
    result.ks = ks;
    result.recall.assign(ks.size(), 0.0);
    std::vector<absl::flat_hash_set<int32_t>> train_items;
    if (!set.has_history) {
      for (int32_t u : set.user_rows) train_items.push_back(data.train_items_of_user[u]);
    }
    const std::vector<float> user_vectors = embed_users(set);
    ASSIGN_OR_RETURN(std::vector<std::vector<ItemIndex::Hit>> hits,
                     (index)->Search(user_vectors.data(), static_cast<int>(set.user_rows.size()), depth,
                                     set.has_history ? &set.excluded : &train_items));

    for (size_t i = 0; i < set.user_rows.size(); ++i) {
      const std::vector<ItemIndex::Hit>& ranked = (hits)[i];
      const absl::flat_hash_set<int32_t>& relevant = set.relevant[i];
      const double total = static_cast<double>(relevant.size() + set.unreachable[i]);
      for (size_t j = 0; j < ks.size(); ++j) {
        int found = 0;
        for (int r = 0; r < ks[j] && r < static_cast<int>(ranked.size()); ++r) {
          found += relevant.contains(ranked[r].row);
        }
        result.recall[j] += found / total;
      }
      double dcg = 0, idcg = 0;
      for (int r = 0; r < 10 && r < static_cast<int>(ranked.size()); ++r) {
        if (relevant.contains(ranked[r].row)) dcg += 1.0 / std::log2(r + 2.0);
      }
      for (int r = 0; r < std::min<double>(10, total); ++r) idcg += 1.0 / std::log2(r + 2.0);
      result.ndcg_at_10 += dcg / idcg;
      if (recs != nullptr) {
        const std::string& user = data.users.ids[set.user_rows[i]];
        for (int r = 0; r < recs_depth && r < static_cast<int>(ranked.size()); ++r) {
          absl::StrAppend(&(*recs)[results.size()], user, "\t", data.items.ids[ranked[r].row], "\t", r + 1, "\n");
        }
      }
    }
    result.users = static_cast<int>(set.user_rows.size());
    if (result.users > 0) {
      for (double& r : result.recall) r /= result.users;
      result.ndcg_at_10 /= result.users;
    }
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<EvalResult>> Evaluate(const TrainingData& data,
                                                 const Tower& user_tower,
                                                 const std::vector<float>& item_vectors,
                                                 const std::vector<int>& ks, int recs_depth,
                                                 std::vector<std::string>* recs) {
  const auto embed_users = [&](const EvalSet& set) {
    if (set.has_history) return user_tower.EmbedAll(set.request_rows);
    EncodedTable users = data.user_encoder.NewTable();
    for (int32_t u : set.user_rows) users.AppendRowFrom(data.users.rows, u);
    return user_tower.EmbedAll(users);
  };
  return EvaluateVectors(data, embed_users, item_vectors, user_tower.output_dim(), ks,
                         recs_depth, recs);
}

absl::StatusOr<std::vector<EvalResult>> EvaluatePopularity(const TrainingData& data,
                                                           const std::vector<int>& ks) {
  // 1-d vectors: user = 1, item = training frequency -> score = frequency.
  std::vector<float> item_scores(data.item_log_frequency.size());
  for (size_t v = 0; v < item_scores.size(); ++v) {
    item_scores[v] = std::exp(data.item_log_frequency[v]);
  }
  const auto embed_users = [](const EvalSet& set) {
    return std::vector<float>(set.user_rows.size(), 1.0f);
  };
  return EvaluateVectors(data, embed_users, item_scores, 1, ks, 0, nullptr);
}

std::string FormatEvalResult(const EvalResult& result) {
  std::string out = absl::StrFormat("%-6s users %5d", result.name, result.users);
  for (size_t j = 0; j < result.ks.size(); ++j) {
    absl::StrAppendFormat(&out, "  Recall@%d %.6f", result.ks[j], result.recall[j]);
  }
  absl::StrAppendFormat(&out, "  NDCG@10 %.6f", result.ndcg_at_10);
  return out;
}

}  // namespace twotower
