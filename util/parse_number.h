// One number parser for every untrusted text: table cells, derived values, request strings.
#ifndef TWOTOWER_UTIL_PARSE_NUMBER_H_
#define TWOTOWER_UTIL_PARSE_NUMBER_H_

#include <optional>

#include "absl/strings/string_view.h"

namespace twotower {

// A finite decimal number (surrounding whitespace allowed), or nullopt: empty, garbage,
// NaN and infinities are all refused, so no table or request can put them into a model.
std::optional<double> ParseNumber(absl::string_view text);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_PARSE_NUMBER_H_
