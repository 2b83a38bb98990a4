#include "util/utf8.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Length of the well-formed sequence at text[i], or 0 if there is none.
size_t SequenceLength(absl::string_view text, size_t i) {
  const auto at = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = at(i);
  const size_t left = text.size() - i;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return left >= 2 && IsContinuation(at(i + 1)) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3) return 0;
    const uint8_t b1 = at(i + 1);
    // E0: A0..BF (no overlongs); ED: 80..9F (no surrogates); others 80..BF.
    const uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    return b1 >= lo && b1 <= hi && IsContinuation(at(i + 2)) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 4) return 0;
    const uint8_t b1 = at(i + 1);
    // F0: 90..BF (no overlongs); F4: 80..8F (nothing above U+10FFFF); others 80..BF.
    const uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return b1 >= lo && b1 <= hi && IsContinuation(at(i + 2)) && IsContinuation(at(i + 3)) ? 4
                                                                                          : 0;
  }
  return 0;  // 80..C1 (a stray continuation or an overlong lead), F5..FF
}

absl::Status CheckFields(const google::protobuf::Message& message, const std::string& path) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const std::string name = path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    const int count = field->is_repeated() ? reflection->FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      const std::string where = field->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (field->type() == FieldDescriptor::TYPE_STRING) {
        std::string scratch;
        const std::string& value =
            field->is_repeated() ? reflection->GetRepeatedStringReference(message, field, i, &scratch)
                                 : reflection->GetStringReference(message, field, &scratch);
        if (!IsValidUtf8(value)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": not valid UTF-8 (", DescribeInvalidUtf8(value), ")"));
        }
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const google::protobuf::Message& child =
            field->is_repeated() ? reflection->GetRepeatedMessage(message, field, i)
                                 : reflection->GetMessage(message, field);
        RETURN_IF_ERROR(CheckFields(child, where));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

size_t FirstInvalidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    // ASCII runs, 8 bytes at a time: ids and tokens are mostly ASCII.
    while (i + 8 <= text.size()) {
      uint64_t word;
      std::memcpy(&word, text.data() + i, 8);
      if ((word & 0x8080808080808080ull) != 0) break;
      i += 8;
    }
    if (i >= text.size()) break;
    const size_t n = SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string::npos;
}

std::string DescribeInvalidUtf8(absl::string_view text) {
  const size_t at = FirstInvalidUtf8(text);
  if (at == std::string::npos) return "";
  return absl::StrFormat("byte 0x%02X at offset %d", static_cast<uint8_t>(text[at]), at);
}

absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Back up over the continuation bytes of the character the cut falls in (at most 3).
  while (cut > 0 && max_bytes - cut < 3 && IsContinuation(static_cast<uint8_t>(text[cut]))) --cut;
  if (cut > 0) return text.substr(0, cut);
  // The first character alone is longer than max_bytes: keep it whole.
  const size_t first = SequenceLength(text, 0);
  return text.substr(0, first > 0 ? first : max_bytes);
}

absl::Status CheckUtf8Fields(const google::protobuf::Message& message) {
  return CheckFields(message, "");
}

}  // namespace twotower
