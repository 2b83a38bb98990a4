#include "absl/strings/string_view.h"
#include "features/vocabulary.h"

#include <algorithm>

namespace twotower {

Vocabulary Vocabulary::Fit(const absl::flat_hash_map<std::string, int64_t>& counts,
                           int64_t min_count) {
  std::vector<std::string> tokens;
  for (const auto& [token, count] : counts) {
    if (count >= min_count) tokens.push_back(token);
  }
  std::sort(tokens.begin(), tokens.end());
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
