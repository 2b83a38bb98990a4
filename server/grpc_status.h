// absl::Status -> grpc::Status at the service boundary. The two share the canonical code
// numbering (google.rpc.Code), so the mapping is 1:1 and the message passes through.
#ifndef TWOTOWER_SERVER_GRPC_STATUS_H_
#define TWOTOWER_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace twotower {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace twotower

#endif  // TWOTOWER_SERVER_GRPC_STATUS_H_
