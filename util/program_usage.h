// --help for our binaries. absl lists the flags of files named after the program or
// main.cc; ours are defined in <component>_main.cc, so say so once here.
#ifndef TWOTOWER_UTIL_PROGRAM_USAGE_H_
#define TWOTOWER_UTIL_PROGRAM_USAGE_H_

#include <vector>

#include "absl/flags/parse.h"
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

// SetProgramUsage(message), then absl::ParseCommandLine(argc, argv): the positional
// arguments (argv[0] first). Exits like absl's parser on --help or a bad flag.
inline std::vector<char*> ParseCommandLineWithUsage(int argc, char** argv, absl::string_view message) {
  SetProgramUsage(message);
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace twotower

#endif  // TWOTOWER_UTIL_PROGRAM_USAGE_H_
