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
  return FromTokens(tokens);
}

int32_t Vocabulary::Lookup(absl::string_view token) const {
  const int32_t i = tokens_.Find(token);
  return i < 0 ? kOov : i + 1;
}

}  // namespace twotower
