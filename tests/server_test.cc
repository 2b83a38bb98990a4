// Server started in-process: options refused by name, start-up failures, Retrieve and
// Admin through the listeners it opens, the drain and the stop.
#include "server/server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "dataset/synthetic.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/grpc_raw.h"
#include "tests/in_process_server.h"
#include "tests/offline_model.h"
#include "tests/server_process.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "tests/trained_model.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"
#include "util/file.h"
#include "util/text_proto.h"

namespace twotower {
namespace {

using testing::Context;
using ::testing::HasSubstr;
using testing::Health;
using testing::IsOk;
using testing::ScopedTempDir;
using testing::StatusIs;

constexpr int kServing = 1;
constexpr int kNotServing = 2;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_ = std::make_unique<testing::TrainedBundle>(1); }
  static void TearDownTestSuite() { shared_.reset(); }

  static Server::Options TestOptions() { return testing::InProcessOptions(shared_->path); }
  static std::unique_ptr<Server> Start(Server::Options options) { return testing::StartServer(std::move(options)); }

  // A user with its own id embedding.
  static std::string KnownUser() { return testing::KnownUsers(shared_->model.report.bundle, 1).at(0); }

  static grpc::Status Retrieve(const Server& server, int k, v1::RetrieveResponse* response) {
    auto stub = v1::Retrieval::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
    v1::RetrieveRequest request;
    request.set_user_id(KnownUser());
    request.set_k(k);
    return stub->Retrieve(Context().get(), request, response);
  }

  static std::unique_ptr<testing::TrainedBundle> shared_;
};
std::unique_ptr<testing::TrainedBundle> ServerTest::shared_;

TEST_F(ServerTest, ValidateNamesTheOptionThatCannotWork) {
  ASSERT_THAT(Server::Validate(TestOptions()), IsOk());
  const std::vector<std::pair<std::string, std::function<void(Server::Options*)>>> cases = {
      {"bundle is required", [](Server::Options* o) { o->bundle.clear(); }},
      {"max_k must be in 1..", [](Server::Options* o) { o->retrieval.max_k = 0; }},
      {"max_k must be in 1..", [](Server::Options* o) { o->retrieval.max_k = 2000000000; }},
      {"max_batch must be in", [](Server::Options* o) { o->retrieval.max_batch = 100000000; }},
      {"search_batch must be in", [](Server::Options* o) { o->retrieval.search_batch = 0; }},
      {"search_rounds must be in", [](Server::Options* o) { o->retrieval.search_rounds = 100000; }},
      {"max_in_flight must be in", [](Server::Options* o) { o->retrieval.max_in_flight = -1; }},
      {"max_response_bytes must be in", [](Server::Options* o) { o->retrieval.max_response_bytes = 1; }},
      {"search_hand_off_ms must be >= 0",
       [](Server::Options* o) { o->retrieval.search_hand_off = -absl::Milliseconds(1); }},
      {"max_request_bytes must be in", [](Server::Options* o) { o->max_request_bytes = 0; }},
      {"max_concurrent_streams must be in", [](Server::Options* o) { o->max_concurrent_streams = 0; }},
      {"grpc_memory_bytes must be in", [](Server::Options* o) { o->grpc_memory_bytes = 1; }},
      {"ef_search must be in", [](Server::Options* o) { o->index.ef_search = 2147483647; }},
      {"shutdown_grace_ms must be in", [](Server::Options* o) { o->shutdown_grace = absl::Hours(2); }},
      {"drain_delay_ms must be in", [](Server::Options* o) { o->drain_delay = -absl::Seconds(1); }},
      {"max_connection_age_ms must be in", [](Server::Options* o) { o->max_connection_age = absl::Hours(24 * 365); }},
      {"listener_probe_ms must be in", [](Server::Options* o) { o->listener_probe_interval = -absl::Milliseconds(1); }},
      {"item_log_poll_ms must be in", [](Server::Options* o) { o->item_log_poll = absl::ZeroDuration(); }},
      {"index / ef_search / nprobe", [](Server::Options* o) { o->index.factory = "IVF0,Flat"; }},
      {"state_dir and item_log_dir cannot be used together",
       [](Server::Options* o) {
         o->state_dir = "a";
         o->item_log_dir = "b";
       }},
      {"tls_client_ca needs tls_cert", [](Server::Options* o) { o->tls_client_ca_pem = "x"; }},
      {"tls_cert and tls_key go together", [](Server::Options* o) { o->tls_cert_pem = "x"; }},
  };
  for (const auto& [expected, mutate] : cases) {
    Server::Options options = TestOptions();
    mutate(&options);
    EXPECT_THAT(Server::Validate(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(expected)))
        << expected;
    // Create validates first: nothing is loaded or bound.
    EXPECT_THAT(Server::Create(std::move(options)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(expected)))
        << expected;
  }
}

TEST_F(ServerTest, CreateReturnsTheBundlesErrorForAMissingBundle) {
  ScopedTempDir dir;
  Server::Options options = TestOptions();
  options.bundle = dir.Join("no-such-bundle");
  const absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(options);
  EXPECT_THAT(server.status(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such-bundle")));
}

TEST_F(ServerTest, CreateIsUnavailableWhenAnAddressIsTaken) {
  const std::unique_ptr<Server> first = Start(TestOptions());
  ASSERT_NE(first, nullptr);
  Server::Options same_address = TestOptions();
  same_address.address = first->address();
  EXPECT_THAT(Server::Create(same_address).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot listen on " + first->address())));
  Server::Options same_admin = TestOptions();
  same_admin.admin_address = first->admin_address();
  EXPECT_THAT(Server::Create(same_admin).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(first->admin_address())));
  Server::Options same_metrics = TestOptions();
  same_metrics.metrics_address = first->address();
  EXPECT_THAT(Server::Create(same_metrics).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot serve metrics")));
  // The first one still serves.
  v1::RetrieveResponse response;
  EXPECT_TRUE(Retrieve(*first, 3, &response).ok());
}

TEST_F(ServerTest, ServesRetrieveAndAdminOnTheAddressesItBound) {
  const std::unique_ptr<Server> server = Start(TestOptions());
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->address(), "127.0.0.1:0");
  EXPECT_NE(server->admin_address(), "127.0.0.1:0");
  EXPECT_EQ(server->model_version(), shared_->model.report.bundle.model_version());

  v1::RetrieveResponse response;
  const grpc::Status ok = Retrieve(*server, 5, &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.items_size(), 5);
  EXPECT_EQ(response.model_version(), server->model_version());
  EXPECT_EQ(Retrieve(*server, 0, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(server->requests_total(), 2);
  EXPECT_EQ(server->requests_failed(), 1);

  auto admin = v1::Admin::NewStub(grpc::CreateChannel(server->admin_address(), grpc::InsecureChannelCredentials()));
  v1::GetStatusResponse status;
  const grpc::Status got = admin->GetStatus(Context().get(), {}, &status);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(status.model_version(), server->model_version());
  EXPECT_TRUE(status.retrieval_listener_accepting());
}

// Options left at their defaults serve as twotower_server does without flags: the index
// the bundle carries, and one search round per core.
TEST_F(ServerTest, DefaultOptionsServeTheBundlesOwnIndex) {
  const Server::Options defaults;
  EXPECT_EQ(defaults.index.factory, "");
  EXPECT_EQ(defaults.retrieval.search_rounds, 0);
  ScopedTempDir dir;
  const std::string bundle = dir.Join("with-index");
  ASSERT_THAT(WriteBundleWithIndex(shared_->model.report.bundle, bundle, "IVF4,Flat", nullptr), IsOk());
  const std::unique_ptr<Server> server = Start(testing::InProcessOptions(bundle));
  ASSERT_NE(server, nullptr);
  auto admin = v1::Admin::NewStub(grpc::CreateChannel(server->admin_address(), grpc::InsecureChannelCredentials()));
  v1::GetStatusResponse status;
  const grpc::Status got = admin->GetStatus(Context().get(), {}, &status);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(status.index().factory(), "IVF4,Flat");
  EXPECT_EQ(status.index().source(), "bundle");
}

TEST_F(ServerTest, AdminCallsNeedTheToken) {
  Server::Options options = TestOptions();
  options.admin_token = "s3cret";
  const std::unique_ptr<Server> server = Start(std::move(options));
  ASSERT_NE(server, nullptr);
  auto admin = v1::Admin::NewStub(grpc::CreateChannel(server->admin_address(), grpc::InsecureChannelCredentials()));
  v1::GetStatusResponse status;
  EXPECT_EQ(admin->GetStatus(Context().get(), {}, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  std::unique_ptr<grpc::ClientContext> wrong = Context();
  wrong->AddMetadata("authorization", "Bearer s3crex");
  EXPECT_EQ(admin->GetStatus(wrong.get(), {}, &status).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  std::unique_ptr<grpc::ClientContext> right = Context();
  right->AddMetadata("authorization", "Bearer s3cret");
  EXPECT_TRUE(admin->GetStatus(right.get(), {}, &status).ok());
}

TEST_F(ServerTest, DrainTurnsHealthNotServingWhileCallsAreStillServed) {
  const std::unique_ptr<Server> server = Start(TestOptions());
  ASSERT_NE(server, nullptr);
  const std::string retrieval = v1::Retrieval::service_full_name();
  EXPECT_EQ(Health(server->address(), ""), kServing);
  EXPECT_EQ(Health(server->address(), retrieval), kServing);

  server->StartDrain();
  EXPECT_EQ(Health(server->address(), ""), kNotServing);
  EXPECT_EQ(Health(server->address(), retrieval), kNotServing);
  v1::RetrieveResponse response;
  EXPECT_TRUE(Retrieve(*server, 3, &response).ok()) << "a call during the drain is still answered";

  server->Stop();
  server->Wait();  // returns: the listeners have stopped
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  auto stub = v1::Retrieval::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  v1::RetrieveRequest request;
  request.set_user_id(KnownUser());
  request.set_k(3);
  EXPECT_EQ(stub->Retrieve(&context, request, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  server->Stop();  // idempotent
  EXPECT_EQ(server->requests_total(), 1);
}

// StartDrain (a signal handler's thread) and Stop (another) at once, with the listener
// probe running: under ASan a race on the probe is a use after free.
TEST_F(ServerTest, DrainAndStopFromTwoThreadsAtOnce) {
  for (int round = 0; round < 5; ++round) {
    Server::Options options = TestOptions();
    options.listener_probe_interval = absl::Milliseconds(1);
    const std::unique_ptr<Server> server = Start(std::move(options));
    ASSERT_NE(server, nullptr);
    std::thread drain([&] { server->StartDrain(); });
    std::thread stop([&] { server->Stop(); });
    drain.join();
    stop.join();
    server->Wait();
  }
}

// A new user who brings a few clicks: Retrieve with them as the request's history returns
// items of the clicked items' taste cluster (the synthetic data's planted structure), and
// never the clicked items themselves.
TEST(ServerNewUserTest, AFewClicksBringTheirClusterAndNoneOfTheClickedItems) {
  ScopedTempDir dir;
  SyntheticOptions synthetic;
  synthetic.users = 600;
  synthetic.items = 300;
  ASSERT_THAT(WriteSyntheticDataset(synthetic, dir.path()), IsOk());
  absl::StatusOr<v1::TrainerConfig> loaded = LoadTrainerConfig(testing::SourceDir() + "/configs/synthetic.textproto");
  ASSERT_THAT(loaded, IsOk());
  v1::TrainerConfig config = *loaded;
  ASSERT_THAT(ParseTextProto(R"pb(name: "history"
                                  kind: KIND_HISTORY
                                  embedding_dim: 16
                                  history_length: 20
                                  history_context: HISTORY_CONTEXT_PRECEDING)pb",
                             "history", config.mutable_data()->mutable_users()->add_features()),
              IsOk());
  v1::TrainingSpec* t = config.mutable_training();
  t->set_epochs(8);
  t->set_user_id_dropout(0.3f);
  t->set_user_history_dropout(0.3f);
  t->set_short_history_rate(1.0f);
  t->set_short_history_from(v1::TrainingSpec::SHORT_HISTORY_FROM_RANDOM);
  ApplyDefaults(&config);
  ASSERT_THAT(ValidateTrainerConfig(config), IsOk());
  absl::StatusOr<TrainingData> data = LoadTrainingData(config, dir.path(), stderr);
  ASSERT_THAT(data, IsOk());
  absl::StatusOr<TrainingReport> report = Train(config, *data, TrainOptions{});
  ASSERT_THAT(report, IsOk());
  ASSERT_THAT(WriteBundle(report->bundle, dir.Join("bundle")), IsOk());

  // Each item's genres; the items with one genre only belong to that genre's cluster.
  absl::StatusOr<std::string> items_csv = ReadFile(dir.Join("items.csv"));
  ASSERT_THAT(items_csv, IsOk());
  std::map<std::string, std::set<std::string>> genres_of;
  std::map<std::string, std::vector<std::string>> only_of;  // genre -> its single-genre items
  for (const absl::string_view line : absl::StrSplit(*items_csv, '\n', absl::SkipEmpty())) {
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    if (fields[0] == "item_id") continue;
    const std::vector<std::string> genres = absl::StrSplit(fields[1], '|');
    genres_of[fields[0]] = {genres.begin(), genres.end()};
    if (genres.size() == 1) only_of[genres[0]].push_back(fields[0]);
  }

  Server::Options options;
  options.bundle = dir.Join("bundle");
  options.address = "127.0.0.1:0";
  options.admin_address = "127.0.0.1:0";
  options.listener_probe_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(options);
  ASSERT_THAT(server, IsOk());
  auto stub = v1::Retrieval::NewStub(grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  constexpr int kK = 20;
  // The share of `genre` among the top kK for a new user with these clicks.
  const auto share_of = [&](const std::string& genre, const std::vector<std::string>& clicks) {
    v1::RetrieveRequest request;
    request.set_user_id("someone-new");
    request.set_k(kK);
    for (const std::string& id : clicks) {
      (*request.mutable_user_features())["history"].mutable_multi_hot()->add_values(id);
    }
    v1::RetrieveResponse response;
    const grpc::Status status = stub->Retrieve(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.items_size(), kK);
    int in_genre = 0;
    for (const v1::ScoredItem& item : response.items()) {
      EXPECT_EQ(std::find(clicks.begin(), clicks.end(), item.item_id()), clicks.end())
          << item.item_id() << " was clicked";
      in_genre += genres_of[item.item_id()].contains(genre) ? 1 : 0;
    }
    return static_cast<double>(in_genre) / kK;
  };
  double with_clicks = 0, without = 0, catalogue = 0;
  int clusters = 0;
  for (const auto& [genre, items] : only_of) {
    if (items.size() < 6) continue;
    const std::vector<std::string> clicks(items.begin(), items.begin() + 3);
    with_clicks += share_of(genre, clicks);
    without += share_of(genre, {});
    catalogue += static_cast<double>(std::count_if(genres_of.begin(), genres_of.end(),
                                                   [&](const auto& item) { return item.second.contains(genre); })) /
                 static_cast<double>(genres_of.size());
    ++clusters;
  }
  ASSERT_GE(clusters, 4);
  with_clicks /= clusters;
  without /= clusters;
  catalogue /= clusters;
  std::printf("share of the clicked cluster's genre in the top %d: with 3 clicks %.3f, without %.3f, catalogue %.3f\n",
              kK, with_clicks, without, catalogue);
  EXPECT_GT(with_clicks, 2 * catalogue);
  EXPECT_GT(with_clicks, without + 0.2);
}

}  // namespace
}  // namespace twotower
