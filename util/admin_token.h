// The admin token, read the same way by the server (which checks it) and the client (which
// sends it), so a trailing newline or a stray space never makes them disagree.
#ifndef TWOTOWER_UTIL_ADMIN_TOKEN_H_
#define TWOTOWER_UTIL_ADMIN_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace twotower {

// The token from `file` when it is set (whitespace around it stripped; an unreadable or
// empty file is an error), else from $TWOTOWER_ADMIN_TOKEN (stripped; set but blank is an
// error too: it must not silently turn authentication off), else "" (none).
absl::StatusOr<std::string> ReadAdminToken(const std::string& file);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_ADMIN_TOKEN_H_
