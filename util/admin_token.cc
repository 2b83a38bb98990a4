#include "util/admin_token.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "util/file.h"

namespace twotower {

absl::StatusOr<std::string> ReadAdminToken(const std::string& file) {
  if (!file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(file);
    if (!contents.ok()) return contents.status();
    const absl::string_view token = absl::StripAsciiWhitespace(*contents);
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": empty admin token"));
    return std::string(token);
  }
  const char* env = std::getenv("TWOTOWER_ADMIN_TOKEN");
  return std::string(absl::StripAsciiWhitespace(env != nullptr ? env : ""));
}

}  // namespace twotower
