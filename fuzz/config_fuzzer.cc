// libFuzzer target: the trainer config (protobuf text format) through parsing, defaults
// and validation (untrusted input: a user's config file).
#include <cstddef>
#include <cstdint>
#include <string>

#include "trainer/config.h"
#include "util/text_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  twotower::v1::TrainerConfig config;
  if (!twotower::ParseTextProto(text, "fuzz", &config).ok()) return 0;
  twotower::ApplyDefaults(&config);
  (void)twotower::ValidateTrainerConfig(config);
  return 0;
}
