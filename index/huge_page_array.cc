#include "index/huge_page_array.h"

#include <sys/mman.h>

#include <new>

namespace twotower {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

void* AllocateForScan(size_t bytes) {
  // Huge pages only for arrays of at least one: a small one (e.g. the online delta index,
  // rebuilt per upsert) would pay a whole 2 MiB page for nothing. aligned_alloc wants a
  // size that is a multiple of the alignment.
  const bool huge = bytes >= kHugePage;
  const size_t alignment = huge ? kHugePage : 64;
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  void* const data = std::aligned_alloc(alignment, rounded);
  if (data == nullptr) throw std::bad_alloc();
  // Advice only: refused (THP off) means small pages, same contents.
  if (huge) (void)madvise(data, rounded, MADV_HUGEPAGE);
  return data;
}

}  // namespace twotower
