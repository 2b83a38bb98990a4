// A Server (server/server.h) started in this process on a small bundle trained on the
// synthetic data, for the tests that call it over gRPC without a separate process.
#ifndef TWOTOWER_TESTS_IN_PROCESS_SERVER_H_
#define TWOTOWER_TESTS_IN_PROCESS_SERVER_H_

#include <memory>
#include <string>
#include <utility>

#include "bundle/bundle.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "tests/trained_model.h"

namespace twotower::testing {

// A model trained for `epochs` (TrainSynthetic) and written to path.
struct TrainedBundle {
  explicit TrainedBundle(int epochs) : model(TrainSynthetic(dir, epochs)), path(dir.Join("bundle")) {
    EXPECT_THAT(WriteBundle(model.report.bundle, path), IsOk());
  }
  ScopedTempDir dir;
  TrainedModel model;
  std::string path;
};

// Free ports, no drain delay, a fast listener probe.
inline Server::Options InProcessOptions(const std::string& bundle) {
  Server::Options options;
  options.bundle = bundle;
  options.address = "127.0.0.1:0";
  options.admin_address = "127.0.0.1:0";
  options.drain_delay = absl::ZeroDuration();
  options.listener_probe_interval = absl::Milliseconds(20);
  return options;
}

// The started server, or null (and a test failure).
inline std::unique_ptr<Server> StartServer(Server::Options options) {
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(std::move(options));
  EXPECT_THAT(server, IsOk());
  return server.ok() ? *std::move(server) : nullptr;
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_IN_PROCESS_SERVER_H_
