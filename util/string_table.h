// A list of strings held compactly, with a hash index from string to position: the
// characters of all the strings in one array, a 4-byte end offset per string, and an
// open-addressing index of a 4-byte position plus a 1-byte tag per slot (at most 0.8 full).
// About (length + 10) bytes per string, where a std::vector<std::string> (32 bytes per
// string, plus a heap block past 15 characters) and an absl::flat_hash_map<std::string,
// int32_t> of the same strings (40 bytes per slot, up to 2.3 slots per string) take ~120:
// the catalogue's item ids and the vocabularies (1M ids: 17 MB instead of ~115 MB).
// Immutable once built; moves keep it valid. Thread-safe to read.
#ifndef TWOTOWER_UTIL_STRING_TABLE_H_
#define TWOTOWER_UTIL_STRING_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace twotower {

class StringTable {
 public:
  // Positions are int32 and end offsets uint32: at most this many strings and characters.
  // (A bundle file holds at most 2 GiB, so the ids and tokens of one always fit.)
  static constexpr size_t kMaxStrings = std::numeric_limits<int32_t>::max();
  static constexpr size_t kMaxChars = std::numeric_limits<uint32_t>::max();

  StringTable() = default;

  // The strings of `strings` (any range of things convertible to absl::string_view), in
  // order. A repeated string keeps both positions; Find returns the first. Throws
  // std::length_error past kMaxStrings or kMaxChars, as a std::vector past its max_size.
  template <typename Range>
  static StringTable Of(const Range& strings) {
    StringTable table;
    size_t count = 0, chars = 0;
    for (const auto& s : strings) {
      ++count;
      chars += absl::string_view(s).size();
    }
    table.Reserve(count, chars);
    for (const auto& s : strings) table.Append(absl::string_view(s));
    table.BuildIndex();
    return table;
  }

  int32_t size() const { return static_cast<int32_t>(ends_.size()); }
  bool empty() const { return ends_.empty(); }
  absl::string_view operator[](int32_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends_[i - 1];
    return absl::string_view(chars_.data() + begin, ends_[i] - begin);
  }
  // Position of `s` (the first, if repeated), or -1.
  int32_t Find(absl::string_view s) const;
  bool contains(absl::string_view s) const { return Find(s) >= 0; }
  // Bytes held (the capacity of its arrays).
  size_t MemoryBytes() const;

  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = absl::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = absl::string_view;
    Iterator() = default;
    Iterator(const StringTable* table, int32_t i) : table_(table), i_(i) {}
    absl::string_view operator*() const { return (*table_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    Iterator operator++(int) {
      Iterator before = *this;
      ++i_;
      return before;
    }
    bool operator==(const Iterator& other) const { return i_ == other.i_; }
    bool operator!=(const Iterator& other) const { return i_ != other.i_; }

   private:
    const StringTable* table_ = nullptr;
    int32_t i_ = 0;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, size()); }
  // The same strings in the same order.
  friend bool operator==(const StringTable& a, const StringTable& b) {
    return a.ends_ == b.ends_ && a.chars_ == b.chars_;
  }

 private:
  void Reserve(size_t count, size_t chars);
  void Append(absl::string_view s);
  void BuildIndex();
  // The slot where the search for a string of hash `hash` starts.
  size_t HomeSlot(size_t hash) const {
    return static_cast<size_t>((static_cast<unsigned __int128>(hash) * slots_.size()) >> 64);
  }

  std::vector<char> chars_;
  std::vector<uint32_t> ends_;   // string i is chars_[ends_[i - 1], ends_[i])
  std::vector<uint32_t> slots_;  // position of the string in a slot (tags_ tells which are used)
  std::vector<uint8_t> tags_;    // 0: empty slot; else 0x80 | 7 bits of the string's hash
};

}  // namespace twotower

#endif  // TWOTOWER_UTIL_STRING_TABLE_H_
