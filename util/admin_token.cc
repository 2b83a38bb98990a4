#include "util/admin_token.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace twotower {

absl::StatusOr<std::string> ReadAdminToken(const std::string& file) {
  if (!file.empty()) {
    // A token is a line; a bigger file is a mistake (or /dev/zero), not a token.
    ReadFileOptions options;
    options.max_bytes = 64 << 10;
    ASSIGN_OR_RETURN(std::string contents, ReadFile(file, options));
    const absl::string_view token = absl::StripAsciiWhitespace(contents);
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": empty admin token"));
    return std::string(token);
  }
  const char* env = std::getenv("TWOTOWER_ADMIN_TOKEN");
  if (env == nullptr) return std::string();  // no token configured
  const absl::string_view token = absl::StripAsciiWhitespace(env);
  // Set but blank is a mistake, not "no auth": it would silently open the admin API.
  if (token.empty()) return absl::InvalidArgumentError("TWOTOWER_ADMIN_TOKEN is set but blank");
  return std::string(token);
}

}  // namespace twotower
