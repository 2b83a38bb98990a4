#ifndef TWOTOWER_UTIL_SHA256_H_
#define TWOTOWER_UTIL_SHA256_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twotower {

// Lower-case hex SHA-256 of `data` (OpenSSL).
std::string Sha256Hex(absl::string_view data);

// Lower-case hex SHA-256 of the first `bytes` bytes of the open file `fd`, read with
// pread from offset 0 in 1 MiB chunks (the file offset does not move; the whole file is
// never in memory). DATA_LOSS if the file ends before `bytes`, INTERNAL on a read error;
// messages name `display`.
absl::StatusOr<std::string> Sha256HexOfFile(int fd, uint64_t bytes, const std::string& display);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_SHA256_H_
