// The value-level transforms a feature spec declares, as pure functions: the trainer and
// the server reach them only through FeatureEncoder, so both apply them identically.
#ifndef TWOTOWER_FEATURES_TRANSFORMS_H_
#define TWOTOWER_FEATURES_TRANSFORMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "twotower/v1/config.pb.h"
#include "util/parse_number.h"  // ParseNumber, used with the derivations

namespace twotower {

// The spec's `derive` applied to a raw string: DERIVE_PREFIX keeps the first prefix_length
// (default 1) bytes, fewer if that would cut a UTF-8 character (the whole first character
// if it alone is longer); DERIVE_YEAR returns the last run of exactly four digits ("" if none).
std::string DeriveValue(const v1::FeatureSpec& spec, absl::string_view raw);

// FNV-1a, 64 bit, over the bytes: the same value in every build and on every platform.
uint64_t StableHash(absl::string_view bytes);

// `x` clipped into the spec's [clip_min, clip_max] (each bound optional).
double Clip(const v1::FeatureSpec& spec, double x);

// Bucket of `x` for ascending `boundaries`: 1 + the number of boundaries <= x (so 1 ..
// boundaries.size() + 1; row 0 stays the OOV / missing row).
int32_t BucketOf(const std::vector<double>& boundaries, double x);

// `buckets` - 1 boundaries splitting `values` into equal-frequency buckets (duplicates
// removed, so there may be fewer).
std::vector<double> QuantileBoundaries(std::vector<double> values, int buckets);

}  // namespace twotower

#endif  // TWOTOWER_FEATURES_TRANSFORMS_H_
