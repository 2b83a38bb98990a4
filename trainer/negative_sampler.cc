#include "trainer/negative_sampler.h"

#include <cmath>

#include "index/item_index.h"
#include "util/status_macros.h"

namespace twotower {

absl::StatusOr<NegativeSampler> NegativeSampler::Create(const TrainingData& data, float alpha) {
  std::vector<double> weights(data.items.ids.size());
  const double total = static_cast<double>(data.train_items.size());
  for (size_t v = 0; v < weights.size(); ++v) {
    // item_log_frequency gives never-seen items half an occurrence: they stay drawable.
    const double count = std::exp(data.item_log_frequency[v]) * total;
    weights[v] = std::pow(count, static_cast<double>(alpha));
  }
  ASSIGN_OR_RETURN(AliasSampler easy, AliasSampler::Create(weights));
  NegativeSampler sampler;
  sampler.easy_ = std::move(easy);
  return sampler;
}

absl::Status NegativeSampler::MineHard(const TrainingData& data, const Tower& user_tower,
                                       const std::vector<float>& item_vectors, int pool) {
  ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> index,
                   ItemIndex::Build(data.items.ids, item_vectors, user_tower.output_dim(), IndexOptions{}));
  std::vector<int32_t> users;
  for (size_t u = 0; u < data.train_items_of_user.size(); ++u) {
    if (!data.train_items_of_user[u].empty()) users.push_back(static_cast<int32_t>(u));
  }
  hard_.assign(data.users.ids.size(), {});
  constexpr size_t kChunk = 4096;  // bounds the memory of vectors and exclusion sets
  EncodedTable rows = data.user_encoder.NewTable();
  for (size_t start = 0; start < users.size(); start += kChunk) {
    const size_t end = std::min(users.size(), start + kChunk);
    rows.Clear();
    std::vector<absl::flat_hash_set<int32_t>> excluded;
    for (size_t i = start; i < end; ++i) {
      rows.AppendRowFrom(data.users.rows, users[i]);
      // Neither the user's positives nor the items it was shown without clicking.
      excluded.push_back(data.train_items_of_user[users[i]]);
      if (!data.exposed_items_of_user.empty()) {
        const auto& exposed = data.exposed_items_of_user[users[i]];
        excluded.back().insert(exposed.begin(), exposed.end());
      }
    }
    const std::vector<float> vectors = user_tower.EmbedAll(rows);
    ASSIGN_OR_RETURN(std::vector<std::vector<ItemIndex::Hit>> hits,
                     (index)->Search(vectors.data(), rows.size(), pool, &excluded));
    for (size_t i = start; i < end; ++i) {
      for (const ItemIndex::Hit& hit : (hits)[i - start]) hard_[users[i]].push_back(hit.row);
    }
  }
  return absl::OkStatus();
}

int32_t NegativeSampler::SampleHard(int32_t user_row, Rng& rng) const {
  const std::vector<int32_t>& pool = hard_[user_row];
  if (pool.empty()) return SampleEasy(rng);
  return pool[UniformIndex(rng, pool.size())];
}

}  // namespace twotower
