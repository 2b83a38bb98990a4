#include "features/transforms.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "util/utf8.h"
#include "util/config_enums.h"

namespace twotower {

std::string DeriveValue(const v1::FeatureSpec& spec, absl::string_view raw) {
  switch (ResolvedDerive(spec)) {
    case v1::FeatureSpec::DERIVE_PREFIX: {
      // Never cut inside a character: the token must stay UTF-8 (it is a vocabulary entry).
      const size_t keep = static_cast<size_t>(std::max(1, spec.prefix_length()));
      return std::string(Utf8Prefix(raw, keep));
    }
    case v1::FeatureSpec::DERIVE_YEAR: {
      std::string year;
      for (size_t i = 0; i < raw.size();) {
        size_t j = i;
        while (j < raw.size() && absl::ascii_isdigit(static_cast<unsigned char>(raw[j]))) ++j;
        if (j - i == 4) year = std::string(raw.substr(i, 4));
        i = j > i ? j : i + 1;
      }
      return year;
    }
    default:
      return std::string(raw);
  }
}

uint64_t StableHash(absl::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (const char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

double Clip(const v1::FeatureSpec& spec, double x) {
  if (spec.has_clip_min()) x = std::max(x, spec.clip_min());
  if (spec.has_clip_max()) x = std::min(x, spec.clip_max());
  return x;
}

int32_t BucketOf(const std::vector<double>& boundaries, double x) {
  return 1 + static_cast<int32_t>(std::upper_bound(boundaries.begin(), boundaries.end(), x) -
                                  boundaries.begin());
}

std::vector<double> QuantileBoundaries(std::vector<double> values, int buckets) {
  std::vector<double> boundaries;
  if (values.empty() || buckets < 2) return boundaries;
  std::sort(values.begin(), values.end());
  for (int b = 1; b < buckets; ++b) {
    const double at = values[std::min(values.size() - 1, values.size() * b / buckets)];
    if (boundaries.empty() || at > boundaries.back()) boundaries.push_back(at);
  }
  return boundaries;
}

}  // namespace twotower
