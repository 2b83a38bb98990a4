#include "util/parse_number.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace twotower {

std::optional<double> ParseNumber(absl::string_view text) {
  double x = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(text), &x) || !std::isfinite(x)) {
    return std::nullopt;
  }
  return x;
}

}  // namespace twotower
