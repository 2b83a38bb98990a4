#ifndef TWOTOWER_UTIL_TEXT_PROTO_H_
#define TWOTOWER_UTIL_TEXT_PROTO_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace twotower {

// Parses protobuf text format; errors name the source and line:column.
absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name,
                            google::protobuf::Message* message);
absl::Status ReadTextProtoFile(const std::string& path, google::protobuf::Message* message);

std::string ToTextProto(const google::protobuf::Message& message);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_TEXT_PROTO_H_
