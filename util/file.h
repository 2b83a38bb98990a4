// Small filesystem helpers with Status returns (no exceptions cross this boundary).
#ifndef TWOTOWER_UTIL_FILE_H_
#define TWOTOWER_UTIL_FILE_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace twotower {

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` and fsyncs it, so a rename that follows publishes data that
// survives a crash.
absl::Status WriteFileDurably(const std::string& path, absl::string_view contents);

// fsyncs a directory (makes renames/creations inside it durable).
absl::Status SyncDirectory(const std::string& path);

// `base` if absolute or `relative_to` is empty, else relative_to/base.
std::string ResolvePath(const std::string& relative_to, const std::string& base);

// Folder part of a path ("." if none).
std::string DirName(const std::string& path);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_FILE_H_
