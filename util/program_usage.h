// --help for our binaries. absl lists the flags of files named after the program or
// main.cc; ours are defined in <component>_main.cc, so say so once here.
#ifndef TWOTOWER_UTIL_PROGRAM_USAGE_H_
#define TWOTOWER_UTIL_PROGRAM_USAGE_H_

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace twotower {

inline void SetProgramUsage(absl::string_view message) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "_main.cc");
  };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(message);
}

}  // namespace twotower

#endif  // TWOTOWER_UTIL_PROGRAM_USAGE_H_
