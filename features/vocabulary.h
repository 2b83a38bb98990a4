// Token -> embedding row. Row 0 is the out-of-vocabulary (OOV) row: unknown, rare and
// missing tokens share it, which is how the towers serve users and items never seen.
#ifndef TWOTOWER_FEATURES_VOCABULARY_H_
#define TWOTOWER_FEATURES_VOCABULARY_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace twotower {

class Vocabulary {
 public:
  static constexpr int32_t kOov = 0;

  Vocabulary() = default;
  // Tokens counted at least `min_count` times, most frequent first (ties: ascending token,
  // so the result is deterministic), at most `max_size` of them (0 = no cap).
  static Vocabulary Fit(const absl::flat_hash_map<std::string, int64_t>& counts,
                        int64_t min_count, int64_t max_size = 0);
  // Restores a vocabulary from its token list (row i + 1 = tokens[i]).
  static Vocabulary FromTokens(std::vector<std::string> tokens);

  int32_t Lookup(absl::string_view token) const;
  // Embedding rows needed, including the OOV row.
  int32_t rows() const { return static_cast<int32_t>(tokens_.size()) + 1; }
  const std::vector<std::string>& tokens() const { return tokens_; }

 private:
  std::vector<std::string> tokens_;
  absl::flat_hash_map<std::string, int32_t> index_;
};

}  // namespace twotower

#endif  // TWOTOWER_FEATURES_VOCABULARY_H_
