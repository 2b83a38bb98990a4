// Calling Retrieve from another C++ service: the generated stub of
// proto/twotower/v1/retrieval.proto, nothing else of this project.
//
//   build/twotower_example_retrieve 127.0.0.1:50051 u00000 10
//
// Prints one "item_id score" line per item, best first; exit 1 with the gRPC status on
// an error (a bad address, an unknown feature, no model loaded...).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "twotower/v1/retrieval.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST:PORT USER_ID K\n", argv[0]);
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  std::unique_ptr<twotower::v1::Retrieval::Stub> stub = twotower::v1::Retrieval::NewStub(channel);

  twotower::v1::RetrieveRequest request;
  request.set_user_id(argv[2]);
  request.set_k(std::atoi(argv[3]));
  // A user the model never saw is served from features, e.g.:
  //   (*request.mutable_user_features())["segment"].set_categorical("s3");
  twotower::v1::RetrieveResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  const grpc::Status status = stub->Retrieve(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "Retrieve failed: %d %s\n", status.error_code(), status.error_message().c_str());
    return 1;
  }
  std::printf("model %s\n", response.model_version().c_str());
  for (const twotower::v1::ScoredItem& item : response.items()) {
    std::printf("%s %.4f\n", item.item_id().c_str(), item.score());
  }
  return 0;
}
