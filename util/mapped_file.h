// A read-only memory mapping of a file, for large read-mostly data that should not live
// on the heap (a loaded bundle's embedding tables).
#ifndef TWOTOWER_UTIL_MAPPED_FILE_H_
#define TWOTOWER_UTIL_MAPPED_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace twotower {

// The first `size()` bytes of a file, mapped PROT_READ and MAP_SHARED for scattered reads
// (rows of a table): the pages are the page cache's, clean and file-backed. A process's
// RSS counts only the pages it touched; every process mapping the same file shares them;
// under memory pressure the kernel drops them and reads them again from the file when
// they are next touched. The first touch of a page not in the page cache is a read from
// the file of that one page (no read-ahead; Map drops the file's cached pages that no
// process maps, see mapped_file.cc). The file must not be modified or truncated while
// mapped: a read past a new end faults with SIGBUS (bundle files are written once and
// never changed in place). Unmapped when destroyed.
class MappedFile {
 public:
  // Maps `bytes` bytes of the open file `fd` from offset 0 (`fd` may be closed afterwards);
  // `bytes` must not exceed the file's size. INTERNAL naming `display` if mmap fails.
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Map(int fd, uint64_t bytes, const std::string& display);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Page-aligned (null for an empty file).
  const char* data() const { return static_cast<const char*>(data_); }
  uint64_t size() const { return size_; }

 private:
  MappedFile(void* data, uint64_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace twotower

#endif  // TWOTOWER_UTIL_MAPPED_FILE_H_
