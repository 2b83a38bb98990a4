#ifndef TWOTOWER_UTIL_SHA256_H_
#define TWOTOWER_UTIL_SHA256_H_

#include <string>
#include "absl/strings/string_view.h"

namespace twotower {

// Lower-case hex SHA-256 of `data` (OpenSSL).
std::string Sha256Hex(absl::string_view data);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_SHA256_H_
