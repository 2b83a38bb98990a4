#include "util/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

const char* FileType(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return absl::StrCat(bytes >> 30, " GiB");
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  return absl::StrCat(bytes, " bytes");
}

absl::Status TooLarge(const std::string& path, uint64_t max_bytes) {
  return absl::OutOfRangeError(
      absl::StrCat(path, ": larger than the limit of ", HumanBytes(max_bytes)));
}

// Opens `path` relative to `dir_fd` (AT_FDCWD: the working directory) per `options`.
absl::StatusOr<ScopedFd> Open(int dir_fd, const std::string& path, const std::string& display,
                              const ReadFileOptions& options) {
  int flags = O_RDONLY | O_CLOEXEC;
  if (options.no_follow) flags |= O_NOFOLLOW;
  if (options.regular_only) flags |= O_NONBLOCK;  // a FIFO must not block the open
  int fd;
  do {
    fd = ::openat(dir_fd, path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (options.no_follow && errno == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat(display, ": is a symbolic link (refused: must be a regular file)"));
    }
    return absl::NotFoundError(absl::StrCat("cannot open ", display, ": ", std::strerror(errno)));
  }
  return ScopedFd(fd);
}

absl::StatusOr<std::string> ReadOpened(const ScopedFd& fd, const std::string& display,
                                       const ReadFileOptions& options) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat", display);
  const bool regular = S_ISREG(st.st_mode);
  if (options.regular_only && !regular) {
    return absl::FailedPreconditionError(
        absl::StrCat(display, ": ", FileType(st.st_mode), " (refused: must be a regular file)"));
  }
  std::string out;
  if (regular) {
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size > options.max_bytes) return TooLarge(display, options.max_bytes);
    out.reserve(size + 1);  // + 1: the read that sees the end
  }
  // Straight into `out` (no buffer on the stack: readers may run on small-stack threads):
  // into the room already reserved, else 64 KiB more; at most one byte past the cap.
  while (true) {
    const size_t old = out.size();
    uint64_t chunk = out.capacity() > old ? out.capacity() - old : uint64_t{64} << 10;
    if (options.max_bytes - old < chunk) chunk = options.max_bytes - old + 1;
    out.resize(old + chunk);
    const ssize_t n = ::read(fd.get(), out.data() + old, chunk);
    const int read_errno = errno;
    out.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n < 0) {
      if (read_errno == EINTR) continue;
      errno = read_errno;
      return ErrnoError("cannot read", display);
    }
    if (n == 0) break;
    if (out.size() > options.max_bytes) return TooLarge(display, options.max_bytes);
  }
  return out;
}

}  // namespace

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  return ReadFile(path, ReadFileOptions{});
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const ReadFileOptions& options) {
  ASSIGN_OR_RETURN(ScopedFd fd, Open(AT_FDCWD, path, path, options));
  return ReadOpened(fd, path, options);
}

absl::StatusOr<ScopedFd> OpenDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open directory ", path, ": ", std::strerror(errno)));
  }
  return ScopedFd(fd);
}

namespace {

absl::Status CheckPlainName(const std::string& display, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(display, ": \"", name, "\" is not a plain file name"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFileAt(const ScopedFd& dir, const std::string& dir_path,
                                       const std::string& name, const ReadFileOptions& options) {
  const std::string display = absl::StrCat(dir_path, "/", name);
  RETURN_IF_ERROR(CheckPlainName(display, name));
  ASSIGN_OR_RETURN(ScopedFd fd, Open(dir.get(), name, display, options));
  return ReadOpened(fd, display, options);
}

absl::StatusOr<ScopedFd> OpenFileAt(const ScopedFd& dir, const std::string& dir_path,
                                    const std::string& name, const ReadFileOptions& options,
                                    uint64_t* size) {
  const std::string display = absl::StrCat(dir_path, "/", name);
  RETURN_IF_ERROR(CheckPlainName(display, name));
  ASSIGN_OR_RETURN(ScopedFd fd, Open(dir.get(), name, display, options));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat", display);
  if (options.regular_only && !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(display, ": ", FileType(st.st_mode), " (refused: must be a regular file)"));
  }
  *size = static_cast<uint64_t>(st.st_size);
  if (S_ISREG(st.st_mode) && *size > options.max_bytes) return TooLarge(display, options.max_bytes);
  return fd;
}

int WriteAll(int fd, absl::string_view data, int64_t offset, const std::function<int()>& fault) {
  for (size_t written = 0; written < data.size();) {
    const int injected = fault ? fault() : 0;
    const char* from = data.data() + written;
    const size_t count = data.size() - written;
    const ssize_t n = injected != 0 ? (errno = injected, -1)
                      : offset < 0
                          ? ::write(fd, from, count)
                          : ::pwrite(fd, from, count, static_cast<off_t>(offset + static_cast<int64_t>(written)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    written += static_cast<size_t>(n);
  }
  return 0;
}

absl::Status WriteFileDurably(const std::string& path, absl::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", path);
  if (const int error = WriteAll(fd, contents); error != 0) {
    errno = error;
    const absl::Status status = ErrnoError("cannot write", path);
    ::close(fd);
    return status;
  }
  if (::fsync(fd) != 0) {
    const absl::Status status = ErrnoError("cannot fsync", path);
    ::close(fd);
    return status;
  }
  if (::close(fd) != 0) return ErrnoError("cannot close", path);
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open directory", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync directory", path);
  return absl::OkStatus();
}

absl::Status EnsureWritableDirectory(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create directory ", dir, ": ", error.message()));
  }
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": not a directory"));
  }
  // Permission bits do not tell (root ignores them, a read-only mount does not show in
  // them): try.
  std::string probe = absl::StrCat(dir, "/.twotower-write-check-XXXXXX");
  if (::mkdtemp(probe.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create entries in ", dir, ": ", std::strerror(errno)));
  }
  ::rmdir(probe.c_str());
  return absl::OkStatus();
}

std::string ResolvePath(const std::string& relative_to, const std::string& base) {
  if (base.empty() || base[0] == '/' || relative_to.empty()) return base;
  return absl::StrCat(relative_to, "/", base);
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace twotower
