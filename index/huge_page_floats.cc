#include "index/huge_page_floats.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace twotower {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

HugePageFloats::HugePageFloats(std::span<const float> values) : size_(values.size()) {
  if (values.empty()) return;
  // aligned_alloc wants a size that is a multiple of the alignment.
  const size_t bytes = (values.size_bytes() + kHugePage - 1) / kHugePage * kHugePage;
  data_.reset(static_cast<float*>(std::aligned_alloc(kHugePage, bytes)));
  if (data_ == nullptr) throw std::bad_alloc();  // as std::vector would
  // Advice only: refused (THP off) means small pages, same contents.
  (void)madvise(data_.get(), bytes, MADV_HUGEPAGE);
  std::copy(values.begin(), values.end(), data_.get());
}

}  // namespace twotower
