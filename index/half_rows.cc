#include "index/half_rows.h"

#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "index/exact_scan.h"

namespace twotower {

namespace {

// Round-to-nearest-even float -> fp16 of `n` values (a multiple of 8).
__attribute__((target("avx2,f16c"))) void ToHalfAvx2(const float* in, size_t n, uint16_t* out) {
  for (size_t i = 0; i < n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  }
}

}  // namespace

std::optional<HalfRows> HalfRows::Of(std::span<const float> rows, int dim) {
  // CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
  static const bool f16c = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return CpuHasAvx2() && __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
  }();
  if (!f16c || dim < 8 || dim % 8 != 0 || rows.size() % dim != 0 ||
      rows.size() / dim > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return std::nullopt;
  }
  HalfRows half;
  half.dim_ = dim;
  half.rows_ = static_cast<int>(rows.size() / dim);
  half.group_norms_.assign((half.rows_ + kGroupRows - 1) / kGroupRows, 0.0f);
  for (int r = 0; r < half.rows_; ++r) {
    double norm2 = 0;
    for (int d = 0; d < dim; ++d) {
      const float v = rows[static_cast<size_t>(r) * dim + d];
      if (!(std::fabs(v) <= 65504.0f)) return std::nullopt;  // also NaN
      norm2 += static_cast<double>(v) * v;
    }
    const double norm = std::sqrt(norm2);
    float& group = half.group_norms_[r / kGroupRows];
    // Rounded up, so the stored norm is never below the row's.
    float up = static_cast<float>(norm);
    if (static_cast<double>(up) < norm) up = std::nextafter(up, std::numeric_limits<float>::infinity());
    group = std::max(group, up);
    half.max_row_norm_ = std::max(half.max_row_norm_, static_cast<double>(up));
  }
  half.values_ = HugePageArray<uint16_t>::Uninitialized(rows.size());
  ToHalfAvx2(rows.data(), rows.size(), half.values_.mutable_data());
  return half;
}

std::optional<HalfErrorBound> HalfScoreErrorBound(const float* query, int dim, double max_row_norm) {
  double norm1 = 0, norm2 = 0;
  for (int d = 0; d < dim; ++d) {
    norm1 += std::fabs(static_cast<double>(query[d]));
    norm2 += static_cast<double>(query[d]) * query[d];
  }
  // Not finite, or large enough that a score could overflow (|score| <= |q|_2 max |x|_2 by
  // Cauchy-Schwarz): no fp16 pass, the floats answer alone.
  if (!std::isfinite(norm1) || !(std::sqrt(norm2) * max_row_norm < 1e38)) return std::nullopt;
  // With u = 2^-24, a float dot product of n terms (any summation order, FMA or not) is
  // within gamma = n u / (1 - n u) of sum |q_i x_i|; fp16 rounding moves x_i by at most
  // 2^-11 |x_i| + 2^-25. So |fp16 score - float score| <= (2^-11 + gamma (2 + 2^-11))
  // sum |q_i x_i| + 2^-25 (1 + gamma) sum |q_i|, and sum |q_i x_i| <= |q|_2 |x|_2.
  // The 1.01 covers the double arithmetic here and one float rounding of a score plus or
  // minus the bound (|score| is at most 2^11 bounds); 1e-37 the float underflow of tiny
  // products.
  const double u = std::ldexp(1.0, -24), nu = dim * u;
  if (!(nu < 0.5)) return std::nullopt;
  const double gamma = nu / (1 - nu);
  const double relative = std::ldexp(1.0, -11) + gamma * (2 + std::ldexp(1.0, -11));
  return HalfErrorBound{1.01 * relative * std::sqrt(norm2),
                        1.01 * std::ldexp(1.0, -25) * (1 + gamma) * norm1 + 1e-37};
}

}  // namespace twotower
