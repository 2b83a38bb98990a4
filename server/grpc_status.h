// absl::Status -> grpc::Status at the service boundary. The two share the canonical code
// numbering (google.rpc.Code), so the code maps 1:1. The message is cut to
// kMaxStatusMessageBytes: messages may quote request input (a feature name, an id), and
// an unbounded one would make the status itself too large for the client to accept.
#ifndef TWOTOWER_SERVER_GRPC_STATUS_H_
#define TWOTOWER_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace twotower {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

// `text` cut to at most `max_bytes` bytes (never inside a UTF-8 sequence), followed by a
// note of how many bytes were left out.
inline std::string Truncated(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return std::string(text.substr(0, end)) + "... (" + std::to_string(text.size() - end) +
         " more bytes)";
}

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      Truncated(std::string_view(status.message().data(), status.message().size()),
                                kMaxStatusMessageBytes));
}

}  // namespace twotower

#endif  // TWOTOWER_SERVER_GRPC_STATUS_H_
