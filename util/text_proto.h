#ifndef TWOTOWER_UTIL_TEXT_PROTO_H_
#define TWOTOWER_UTIL_TEXT_PROTO_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "util/file.h"

namespace twotower {

// Parses protobuf text format; errors name the source and line:column.
absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name,
                            google::protobuf::Message* message);
absl::Status ReadTextProtoFile(const std::string& path, google::protobuf::Message* message);
// The same with the file read per `options` (size cap, regular files only...).
absl::Status ReadTextProtoFile(const std::string& path, google::protobuf::Message* message,
                               const ReadFileOptions& options);

std::string ToTextProto(const google::protobuf::Message& message);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_TEXT_PROTO_H_
