// Small filesystem helpers with Status returns (no exceptions cross this boundary).
#ifndef TWOTOWER_UTIL_FILE_H_
#define TWOTOWER_UTIL_FILE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twotower {

// What ReadFile accepts. The defaults read anything that can be read (a FIFO, e.g. a
// shell's <(...), blocks until its writer is done), of any size.
struct ReadFileOptions {
  // A larger file is refused (OUT_OF_RANGE) without reading more than this, so a
  // /dev/zero or a runaway writer cannot exhaust memory.
  uint64_t max_bytes = std::numeric_limits<uint64_t>::max();
  // Only a regular file: a FIFO, device, socket or directory is refused
  // (FAILED_PRECONDITION). The open is non-blocking, so a FIFO cannot hang it.
  bool regular_only = false;
  // The last path component must not be a symbolic link (O_NOFOLLOW; FAILED_PRECONDITION).
  bool no_follow = false;
};

// Errors name the path: NOT_FOUND when it cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path);
absl::StatusOr<std::string> ReadFile(const std::string& path, const ReadFileOptions& options);

// An open file descriptor, closed when destroyed.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd();
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens a directory (reached through symlinks or not) for ReadFileAt.
absl::StatusOr<ScopedFd> OpenDirectory(const std::string& path);

// ReadFile of the entry `name` of the open directory `dir` (whose path is `dir_path`, for
// messages): every read comes from that directory even if its path is re-pointed meanwhile.
// `name` must be one path component (no '/', not "." or "..": INVALID_ARGUMENT).
absl::StatusOr<std::string> ReadFileAt(const ScopedFd& dir, const std::string& dir_path,
                                       const std::string& name, const ReadFileOptions& options);

// Opens the entry `name` of `dir` for reading, with ReadFileAt's checks (one path
// component; `options.no_follow`, `options.regular_only`) but without reading it, for a
// file too large to hold in memory (e.g. read with pread or memory-mapped). A regular file
// larger than `options.max_bytes` is OUT_OF_RANGE. *size: its size (fstat).
absl::StatusOr<ScopedFd> OpenFileAt(const ScopedFd& dir, const std::string& dir_path,
                                    const std::string& name, const ReadFileOptions& options,
                                    uint64_t* size);

// Writes all of `data` to `fd`: at `offset` (pwrite) or, for offset < 0, at the file
// position (write); interrupted and short writes are resumed. Returns 0, or the errno of
// the write that failed (EIO for one that wrote nothing). `fault`, when set, is called
// before each write; a nonzero result fails that write with it as errno (fault injection
// in tests). Nothing is synced: fsync after it for durability.
int WriteAll(int fd, absl::string_view data, int64_t offset = -1, const std::function<int()>& fault = nullptr);

// Writes `contents` to `path` and fsyncs it, so a rename that follows publishes data that
// survives a crash.
absl::Status WriteFileDurably(const std::string& path, absl::string_view contents);

// fsyncs a directory (makes renames/creations inside it durable).
absl::Status SyncDirectory(const std::string& path);

// Creates `dir` (and its parents) if missing, and checks that entries can be created in
// it (by creating and removing one), so a program finds out before its work, not after.
absl::Status EnsureWritableDirectory(const std::string& dir);

// `base` if absolute or `relative_to` is empty, else relative_to/base.
std::string ResolvePath(const std::string& relative_to, const std::string& base);

// Folder part of a path ("." if none).
std::string DirName(const std::string& path);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_FILE_H_
