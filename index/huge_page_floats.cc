#include "index/huge_page_floats.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>
#include <utility>

namespace twotower {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

HugePageFloats::HugePageFloats(std::span<const float> values) : size_(values.size()) {
  if (values.empty()) return;
  // Huge pages only for matrices of at least one: a small one (e.g. the online delta
  // index, rebuilt per upsert) would pay a whole 2 MiB page for nothing. aligned_alloc
  // wants a size that is a multiple of the alignment.
  const bool huge = values.size_bytes() >= kHugePage;
  const size_t alignment = huge ? kHugePage : 64;
  const size_t bytes = (values.size_bytes() + alignment - 1) / alignment * alignment;
  data_.reset(static_cast<float*>(std::aligned_alloc(alignment, bytes)));
  if (data_ == nullptr) throw std::bad_alloc();  // as std::vector would
  // Advice only: refused (THP off) means small pages, same contents.
  if (huge) (void)madvise(data_.get(), bytes, MADV_HUGEPAGE);
  std::copy(values.begin(), values.end(), data_.get());
}

HugePageFloats::HugePageFloats(HugePageFloats&& other) noexcept
    : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}

HugePageFloats& HugePageFloats::operator=(HugePageFloats&& other) noexcept {
  data_ = std::move(other.data_);
  size_ = std::exchange(other.size_, 0);
  return *this;
}

}  // namespace twotower
