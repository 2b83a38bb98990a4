// Token -> embedding row. Row 0 is the out-of-vocabulary (OOV) row: unknown, rare and
// missing tokens share it, which is how the towers serve users and items never seen.
#ifndef TWOTOWER_FEATURES_VOCABULARY_H_
#define TWOTOWER_FEATURES_VOCABULARY_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "util/string_table.h"

namespace twotower {

class Vocabulary {
 public:
  static constexpr int32_t kOov = 0;

  Vocabulary() = default;
  // Tokens counted at least `min_count` times, most frequent first (ties: ascending token,
  // so the result is deterministic), at most `max_size` of them (0 = no cap).
  static Vocabulary Fit(const absl::flat_hash_map<std::string, int64_t>& counts,
                        int64_t min_count, int64_t max_size = 0);
  // Restores a vocabulary from its token list (row i + 1 = tokens[i]): any range of
  // strings (a std::vector<std::string>, a protobuf repeated string field...).
  template <typename Range>
  static Vocabulary FromTokens(const Range& tokens) {
    Vocabulary vocab;
    vocab.tokens_ = StringTable::Of(tokens);
    return vocab;
  }

  int32_t Lookup(absl::string_view token) const;
  // Embedding rows needed, including the OOV row.
  int32_t rows() const { return tokens_.size() + 1; }
  // The tokens in row order (row i + 1 = tokens()[i]), iterable as absl::string_view.
  const StringTable& tokens() const { return tokens_; }

 private:
  // One compact table (util/string_table.h): an item id vocabulary of 1M ids holds ~17 MB,
  // not the ~115 MB of a vector of strings plus a hash map keyed by them.
  StringTable tokens_;
};

}  // namespace twotower

#endif  // TWOTOWER_FEATURES_VOCABULARY_H_
