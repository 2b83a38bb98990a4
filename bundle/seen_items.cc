#include "bundle/seen_items.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace twotower {

namespace {

// A row fits 31 bits: at most 5 bytes of 7.
constexpr int kMaxVarintBytes = 5;

void PutVarint(uint32_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Reads one varint of bytes[*at, end); false if it is cut by `end` or longer than a row.
bool GetVarint(const std::string& bytes, uint64_t end, uint64_t* at, uint64_t* value) {
  *value = 0;
  for (int i = 0; i < kMaxVarintBytes; ++i) {
    if (*at >= end) return false;
    const auto byte = static_cast<uint8_t>(bytes[(*at)++]);
    *value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

void SeenItems::Append(std::vector<int32_t>& rows) {
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  int32_t previous = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    PutVarint(static_cast<uint32_t>(i == 0 ? rows[i] : rows[i] - previous), &bytes_);
    previous = rows[i];
  }
  ends_.push_back(bytes_.size());
}

absl::StatusOr<SeenItems> SeenItems::FromProto(v1::SeenItems* proto, int64_t users, int64_t items,
                                               absl::string_view file) {
  SeenItems seen;
  if (proto->ends_size() == 0 && proto->rows().empty()) return seen;
  const auto fail = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(file, ": seen.", what));
  };
  if (proto->ends_size() != users) {
    return fail(absl::StrCat("ends: ", proto->ends_size(), " entries for ", users, " users"));
  }
  seen.bytes_ = std::move(*proto->mutable_rows());
  seen.ends_.assign(proto->ends().begin(), proto->ends().end());
  proto->Clear();
  uint64_t at = 0;
  for (int64_t u = 0; u < users; ++u) {
    const uint64_t end = seen.ends_[u];
    if (end < at || end > seen.bytes_.size()) {
      return fail(absl::StrCat("ends[", u, "]: ", end, " is outside ", at, "..", seen.bytes_.size()));
    }
    int64_t row = -1;
    while (at < end) {
      uint64_t value = 0;
      if (!GetVarint(seen.bytes_, end, &at, &value)) {
        return fail(absl::StrCat("rows: user row ", u, ": a varint is cut or too long"));
      }
      if (row >= 0 && value == 0) return fail(absl::StrCat("rows: user row ", u, ": an item twice"));
      row = row < 0 ? static_cast<int64_t>(value) : row + static_cast<int64_t>(value);
      if (row >= items) {
        return fail(absl::StrCat("rows: user row ", u, ": item row ", row, " of ", items, " items"));
      }
    }
  }
  if (at != seen.bytes_.size()) return fail("ends: the last end is not the size of rows");
  return seen;
}

void SeenItems::ToProto(v1::SeenItems* proto) const {
  proto->mutable_ends()->Add(ends_.begin(), ends_.end());
  proto->set_rows(bytes_);
}

void SeenItems::AppendRowsOf(int64_t user, std::vector<int32_t>* out) const {
  if (user < 0 || user >= users()) return;
  uint64_t at = user == 0 ? 0 : ends_[user - 1];
  const uint64_t end = ends_[user];
  int64_t row = -1;
  uint64_t value = 0;
  while (at < end && GetVarint(bytes_, end, &at, &value)) {
    row = row < 0 ? static_cast<int64_t>(value) : row + static_cast<int64_t>(value);
    out->push_back(static_cast<int32_t>(row));
  }
}

}  // namespace twotower
