// gRPC calls with raw bytes, for tests: a request need not be a valid message, and the
// standard health service is called without its generated stub.
#ifndef TWOTOWER_TESTS_GRPC_RAW_H_
#define TWOTOWER_TESTS_GRPC_RAW_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace twotower::testing {

// Calls `method` with raw request bytes (nothing checks they are a valid message).
inline grpc::Status CallRaw(const std::string& address, const std::string& method, const std::string& bytes,
                            std::string* answer = nullptr) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
    done_cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  done_cv.wait(lock, [&] { return done; });
  if (answer != nullptr && status.ok()) {
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    answer->clear();
    for (const grpc::Slice& s : slices) answer->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

// Health of `service` ("" = the whole server) by a new connection: 1 SERVING, 2 NOT_SERVING,
// -1 no answer.
inline int Health(const std::string& address, const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  std::string answer;
  if (!CallRaw(address, "/grpc.health.v1.Health/Check", request, &answer).ok()) return -1;
  return answer.size() == 2 && answer[0] == 0x08 ? answer[1] : (answer.empty() ? 0 : -1);
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_GRPC_RAW_H_
