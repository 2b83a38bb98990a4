#include "absl/strings/string_view.h"
#include "features/vocabulary.h"

#include <algorithm>

namespace twotower {

Vocabulary Vocabulary::Fit(const absl::flat_hash_map<std::string, int64_t>& counts,
                           int64_t min_count, int64_t max_size) {
  std::vector<std::pair<int64_t, std::string>> kept;
  for (const auto& [token, count] : counts) {
    if (count >= min_count) kept.emplace_back(-count, token);
  }
  std::sort(kept.begin(), kept.end());
  if (max_size > 0 && static_cast<int64_t>(kept.size()) > max_size) kept.resize(max_size);
  std::vector<std::string> tokens;
  tokens.reserve(kept.size());
  for (auto& [negative_count, token] : kept) tokens.push_back(std::move(token));
  return FromTokens(std::move(tokens));
}

Vocabulary Vocabulary::FromTokens(std::vector<std::string> tokens) {
  Vocabulary vocab;
  vocab.tokens_ = std::move(tokens);
  vocab.index_.reserve(vocab.tokens_.size());
  for (size_t i = 0; i < vocab.tokens_.size(); ++i) {
    vocab.index_.emplace(vocab.tokens_[i], static_cast<int32_t>(i + 1));
  }
  return vocab;
}

int32_t Vocabulary::Lookup(absl::string_view token) const {
  const auto it = index_.find(token);
  return it == index_.end() ? kOov : it->second;
}

}  // namespace twotower
