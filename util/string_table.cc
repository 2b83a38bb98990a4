#include "util/string_table.h"

#include <cstring>
#include <stdexcept>

#include "absl/hash/hash.h"

namespace twotower {

namespace {

size_t HashOf(absl::string_view s) { return absl::Hash<absl::string_view>{}(s); }
uint8_t TagOf(size_t hash) { return static_cast<uint8_t>(0x80 | (hash & 0x7f)); }

}  // namespace

void StringTable::Reserve(size_t count, size_t chars) {
  if (count > kMaxStrings) throw std::length_error("StringTable: more than 2^31 - 1 strings");
  if (chars > kMaxChars) throw std::length_error("StringTable: more than 2^32 - 1 characters");
  chars_.reserve(chars);
  ends_.reserve(count);
}

void StringTable::Append(absl::string_view s) {
  if (ends_.size() >= kMaxStrings) throw std::length_error("StringTable: more than 2^31 - 1 strings");
  if (s.size() > kMaxChars - chars_.size()) throw std::length_error("StringTable: more than 2^32 - 1 characters");
  chars_.insert(chars_.end(), s.begin(), s.end());
  ends_.push_back(static_cast<uint32_t>(chars_.size()));
}

void StringTable::BuildIndex() {
  const size_t n = ends_.size();
  // At most 0.8 full: linear probing then inspects ~3 tags to find a string and ~13 (one
  // cache line) to miss one, and compares characters only where a tag matches.
  const size_t capacity = n + n / 4 + 1;
  slots_.assign(capacity, 0);
  tags_.assign(capacity, 0);
  for (size_t i = 0; i < n; ++i) {
    const absl::string_view s = (*this)[static_cast<int32_t>(i)];
    const size_t hash = HashOf(s);
    const uint8_t tag = TagOf(hash);
    size_t slot = HomeSlot(hash);
    bool repeated = false;
    while (tags_[slot] != 0) {
      if (tags_[slot] == tag && (*this)[static_cast<int32_t>(slots_[slot])] == s) {
        repeated = true;  // the first position stays the one found
        break;
      }
      if (++slot == capacity) slot = 0;
    }
    if (repeated) continue;
    tags_[slot] = tag;
    slots_[slot] = static_cast<uint32_t>(i);
  }
}

int32_t StringTable::Find(absl::string_view s) const {
  if (slots_.empty()) return -1;
  const size_t hash = HashOf(s);
  const uint8_t tag = TagOf(hash);
  const size_t capacity = slots_.size();
  for (size_t slot = HomeSlot(hash); tags_[slot] != 0;) {
    if (tags_[slot] == tag) {
      const int32_t i = static_cast<int32_t>(slots_[slot]);
      if ((*this)[i] == s) return i;
    }
    if (++slot == capacity) slot = 0;
  }
  return -1;
}

size_t StringTable::MemoryBytes() const {
  return chars_.capacity() + ends_.capacity() * sizeof(uint32_t) + slots_.capacity() * sizeof(uint32_t) +
         tags_.capacity();
}

}  // namespace twotower
