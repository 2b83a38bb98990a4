#include "util/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace twotower {

absl::StatusOr<std::shared_ptr<const MappedFile>> MappedFile::Map(int fd, uint64_t bytes, const std::string& display) {
  if (bytes == 0) return std::shared_ptr<const MappedFile>(new MappedFile(nullptr, 0));
  // What a read() left in the page cache is in large folios (Linux 6.x; up to 2 MiB), and
  // a fault maps the whole folio around the byte touched: one row read would put 2 MiB in
  // RSS. Dropped here (clean pages no process maps; a failure only costs memory), later
  // touches read single pages (MADV_RANDOM below: no read-ahead).
  ::posix_fadvise(fd, 0, static_cast<off_t>(bytes), POSIX_FADV_DONTNEED);
  void* data = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot memory-map ", display, " (", bytes, " bytes): ", std::strerror(errno)));
  }
  // Rows are read one at a time, scattered (an upsert's id, a user's history): no
  // read-ahead around them.
  ::madvise(data, bytes, MADV_RANDOM);
  return std::shared_ptr<const MappedFile>(new MappedFile(data, bytes));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace twotower
