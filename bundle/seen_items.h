// The items each known user interacted with in the training data (a bundle's users.pb,
// `SeenItems` in bundle.proto), which Retrieve leaves out of that user's answers.
//
// Compact on disk and in memory: per user, the ascending catalogue rows delta-coded as
// LEB128 varints (about 1-2 bytes per interaction), plus an 8-byte end offset per user.
#ifndef TWOTOWER_BUNDLE_SEEN_ITEMS_H_
#define TWOTOWER_BUNDLE_SEEN_ITEMS_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "twotower/v1/bundle.pb.h"

namespace twotower {

class SeenItems {
 public:
  SeenItems() = default;

  // From each user's item rows (any order, duplicates allowed), users in row order.
  template <typename Sets>
  static SeenItems Of(const Sets& rows_of_user) {
    SeenItems seen;
    std::vector<int32_t> rows;
    for (const auto& set : rows_of_user) {
      rows.assign(set.begin(), set.end());
      seen.Append(rows);
    }
    return seen;
  }

  // Checks `proto` as untrusted input: one end per user (`users`), ends non-decreasing
  // and within `rows`, every varint whole and inside its user's bytes, rows ascending and
  // below `items`. An empty message (no ends) is "no seen sets". DATA_LOSS naming `file`
  // otherwise. Takes the bytes out of `proto`.
  static absl::StatusOr<SeenItems> FromProto(v1::SeenItems* proto, int64_t users, int64_t items,
                                             absl::string_view file);
  void ToProto(v1::SeenItems* proto) const;

  // Whether the bundle carries seen sets (else every user has none).
  bool empty() const { return ends_.empty(); }
  int64_t users() const { return static_cast<int64_t>(ends_.size()); }
  // Appends user row `user`'s item rows (ascending) to `out`; nothing for a row out of
  // range.
  void AppendRowsOf(int64_t user, std::vector<int32_t>* out) const;
  // Bytes held (the coded rows and the end offsets).
  size_t MemoryBytes() const { return bytes_.capacity() + ends_.capacity() * sizeof(uint64_t); }

 private:
  // Adds the next user: `rows` sorted and deduplicated in place.
  void Append(std::vector<int32_t>& rows);

  std::vector<uint64_t> ends_;
  std::string bytes_;
};

}  // namespace twotower

#endif  // TWOTOWER_BUNDLE_SEEN_ITEMS_H_
