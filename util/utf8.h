// UTF-8 validity. Every string that reaches a protobuf `string` field (ids, feature
// tokens, feature names: the bundle files and the serving API) must be valid UTF-8:
// protobuf serializes invalid UTF-8 with only a logged error, and then refuses to parse it.
#ifndef TWOTOWER_UTIL_UTF8_H_
#define TWOTOWER_UTIL_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace twotower {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence, or
// std::string::npos when `text` is valid. Well-formed per Unicode 15 table 3-7: no
// overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated
// sequence at the end.
size_t FirstInvalidUtf8(absl::string_view text);

inline bool IsValidUtf8(absl::string_view text) {
  return FirstInvalidUtf8(text) == std::string::npos;
}

// "byte 0xE9 at offset 3": where and what the first invalid byte is (for error messages);
// empty when `text` is valid.
std::string DescribeInvalidUtf8(absl::string_view text);

// The first `max_bytes` bytes of `text`, shortened so they do not end inside a character
// (UTF-8 input gives UTF-8 output); if even the first character is longer than
// `max_bytes`, that whole character.
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes);

// Every string field (not `bytes`) of `message`, recursively, is valid UTF-8; else
// INVALID_ARGUMENT naming the field's path, e.g. "data.users.features[2].name".
absl::Status CheckUtf8Fields(const google::protobuf::Message& message);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_UTF8_H_
