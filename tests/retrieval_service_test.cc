// The Retrieval service through a Server started in this process: answers checked
// against the offline model computed from the bundle (known and cold users, k, filters,
// exclusions, batches) and the requests it refuses, with their messages; what GetStatus
// counts of them, and answers after RebuildIndex. The behaviour
// that needs a real server process (signals, exit codes, the CLI and Python clients, TLS
// files, hostile raw clients) is in e2e_server_test.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bundle/bundle.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/in_process_server.h"
#include "tests/offline_model.h"
#include "tests/server_process.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"

namespace twotower {
namespace {

using ::testing::HasSubstr;
using testing::ColdUserRequest;
using testing::Context;
using testing::ExpectOfflineTopK;
using testing::IsOk;
using testing::KnownUserRequest;
using testing::KnownUsers;
using testing::OfflineScores;
using testing::OfflineUserRow;
using testing::SeenItemsOf;
using testing::kScoreTolerance;

// The limits of Server::Options' defaults the tests below go up to and past.
constexpr int kMaxK = 1000;
constexpr int kMaxExclude = 10000;
constexpr int kMaxFilters = 64;
constexpr int kMaxFilterValues = 4096;

class RetrievalServiceTest : public ::testing::Test {
 protected:
  // One trained bundle for the suite.
  static void SetUpTestSuite() {
    trained_ = std::make_unique<testing::TrainedBundle>(2);
    absl::StatusOr<Bundle> bundle = ReadBundle(trained_->path);
    ASSERT_THAT(bundle, IsOk());
    latest_ = std::make_unique<Bundle>(*std::move(bundle));
  }

  static void TearDownTestSuite() {
    latest_.reset();
    trained_.reset();
  }

  // A server of its own for each test (default limits), as tests may change it.
  void SetUp() override {
    ASSERT_NE(latest_, nullptr);
    const Server::Options options = testing::InProcessOptions(trained_->path);
    ASSERT_EQ(options.retrieval.max_k, kMaxK);
    ASSERT_EQ(options.retrieval.max_exclude, kMaxExclude);
    ASSERT_EQ(options.retrieval.max_filters, kMaxFilters);
    ASSERT_EQ(options.retrieval.max_filter_values, kMaxFilterValues);
    server_ = testing::StartServer(options);
    ASSERT_NE(server_, nullptr);
    retrieval_ = v1::Retrieval::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    admin_ = v1::Admin::NewStub(grpc::CreateChannel(server_->admin_address(), grpc::InsecureChannelCredentials()));
  }

  v1::Retrieval::Stub& retrieval() { return *retrieval_; }
  v1::Admin::Stub& admin() { return *admin_; }

  grpc::Status Retrieve(const v1::RetrieveRequest& request, v1::RetrieveResponse* response) {
    return retrieval().Retrieve(Context().get(), request, response);
  }

  v1::GetStatusResponse Status() {
    v1::GetStatusResponse status;
    const grpc::Status rpc = admin().GetStatus(Context().get(), {}, &status);
    EXPECT_TRUE(rpc.ok()) << rpc.error_message();
    return status;
  }

  static inline std::unique_ptr<testing::TrainedBundle> trained_;
  static inline std::unique_ptr<Bundle> latest_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Retrieval::Stub> retrieval_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(RetrievalServiceTest, KnownUsersGetTheOfflineModelsTopK) {
  const std::vector<std::string> users = KnownUsers(*latest_, 5);
  ASSERT_EQ(users.size(), 5u);
  for (const std::string& user : users) {
    SCOPED_TRACE(user);
    const v1::RetrieveRequest request = KnownUserRequest(user, 10);
    v1::RetrieveResponse response;
    const grpc::Status status = Retrieve(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.model_version(), latest_->model_version());
    EXPECT_TRUE(response.user_known());
    EXPECT_EQ(response.items_size(), 10);
    ExpectOfflineTopK(*latest_, request, response);
  }
}

TEST_F(RetrievalServiceTest, KLargerThanTheCatalogueReturnsEveryItemOnce) {
  // Every item but those the user interacted with in training; with them, every item.
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const size_t seen = SeenItemsOf(*latest_, user).size();
  ASSERT_GT(seen, 0u);
  v1::RetrieveRequest request = KnownUserRequest(user, kMaxK);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(request, &response).ok());
  EXPECT_EQ(response.items_size(), static_cast<int>(latest_->items.ids.size() - seen));
  ExpectOfflineTopK(*latest_, request, response);
  request.set_include_history_items(true);
  ASSERT_TRUE(Retrieve(request, &response).ok());
  EXPECT_EQ(response.items_size(), static_cast<int>(latest_->items.ids.size()));
  ExpectOfflineTopK(*latest_, request, response);
}

TEST_F(RetrievalServiceTest, ColdUserWithFeaturesIsServedFromFeatures) {
  const v1::RetrieveRequest request = ColdUserRequest("never-seen-user", 10);
  v1::RetrieveResponse response;
  const grpc::Status status = Retrieve(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.user_known());
  EXPECT_EQ(response.items_size(), 10);
  ExpectOfflineTopK(*latest_, request, response);

  // Features without any id work too.
  v1::RetrieveRequest anonymous = ColdUserRequest("", 5);
  ASSERT_TRUE(Retrieve(anonymous, &response).ok());
  EXPECT_FALSE(response.user_known());
  ExpectOfflineTopK(*latest_, anonymous, response);
}

TEST_F(RetrievalServiceTest, ColdUserWithoutFeaturesGetsTheOovEmbedding) {
  const v1::RetrieveRequest request = KnownUserRequest("never-seen-user", 10);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(request, &response).ok());
  EXPECT_FALSE(response.user_known());
  ExpectOfflineTopK(*latest_, request, response);
}

TEST_F(RetrievalServiceTest, InvalidRequestsAreRejected) {
  v1::RetrieveResponse response;
  v1::RetrieveRequest nobody;
  nobody.set_k(10);
  EXPECT_EQ(Retrieve(nobody, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const std::string user = KnownUsers(*latest_, 1).at(0);
  EXPECT_EQ(Retrieve(KnownUserRequest(user, 0), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Retrieve(KnownUserRequest(user, -3), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Retrieve(KnownUserRequest(user, kMaxK + 1), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::RetrieveRequest unknown_feature = ColdUserRequest("x", 5);
  (*unknown_feature.mutable_user_features())["shoe_size"].set_numeric(44);
  const grpc::Status unknown = Retrieve(unknown_feature, &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(unknown.error_message().find("shoe_size"), std::string::npos)
      << unknown.error_message();

  v1::RetrieveRequest wrong_type = ColdUserRequest("x", 5);
  (*wrong_type.mutable_user_features())["age"].set_categorical("old");
  EXPECT_EQ(Retrieve(wrong_type, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::RetrieveRequest filtered = KnownUserRequest(user, 5);
  v1::ItemFilter* filter = filtered.add_filters();
  filter->set_feature("price");  // numeric: cannot filter by value sets
  filter->add_any_of("9.5");
  EXPECT_EQ(Retrieve(filtered, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  filter->set_feature("no_such_feature");
  EXPECT_EQ(Retrieve(filtered, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::RetrieveRequest not_a_number = ColdUserRequest("x", 5);
  (*not_a_number.mutable_user_features())["age"].set_numeric(std::nan(""));
  EXPECT_EQ(Retrieve(not_a_number, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  (*not_a_number.mutable_user_features())["age"].set_numeric(INFINITY);
  EXPECT_EQ(Retrieve(not_a_number, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A category never seen is not an error: it uses the OOV row.
  v1::RetrieveRequest unseen = ColdUserRequest("x", 5);
  (*unseen.mutable_user_features())["segment"].set_categorical("a-segment-nobody-has");
  EXPECT_TRUE(Retrieve(unseen, &response).ok());

  {  // A deadline that has already passed.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
    EXPECT_EQ(retrieval().Retrieve(&context, KnownUserRequest(user, 5), &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }

  // A finite but absurd number overflows the tower: rejected, not answered with garbage.
  v1::RetrieveRequest huge = ColdUserRequest("x", 5);
  (*huge.mutable_user_features())["age"].set_numeric(1e300);
  EXPECT_EQ(Retrieve(huge, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // More exclusions than the server's max_exclude (default 10000).
  v1::RetrieveRequest too_many = KnownUserRequest(user, 5);
  for (int i = 0; i <= 10000; ++i) too_many.add_exclude_item_ids("item-" + std::to_string(i));
  EXPECT_EQ(Retrieve(too_many, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The server is still fine.
  EXPECT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
}

TEST_F(RetrievalServiceTest, FiltersAreHonouredExactly) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveRequest request = KnownUserRequest(user, 20);
  v1::ItemFilter* genres = request.add_filters();
  genres->set_feature("genres");
  genres->add_any_of("g1");
  genres->add_any_of("g2");
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(request, &response).ok());
  EXPECT_EQ(response.items_size(), 20);
  ExpectOfflineTopK(*latest_, request, response);
  // Two filters (AND) plus exclusions.
  v1::ItemFilter* brand = request.add_filters();
  brand->set_feature("brand");
  for (const char* b : {"b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"}) brand->add_any_of(b);
  request.add_exclude_item_ids(response.items(0).item_id());
  ASSERT_TRUE(Retrieve(request, &response).ok());
  ExpectOfflineTopK(*latest_, request, response);
  // A value no item has: nothing passes, an empty answer (not an error).
  v1::RetrieveRequest none = KnownUserRequest(user, 5);
  v1::ItemFilter* nothing = none.add_filters();
  nothing->set_feature("genres");
  nothing->add_any_of("no-such-genre");
  ASSERT_TRUE(Retrieve(none, &response).ok());
  EXPECT_EQ(response.items_size(), 0);
}

TEST_F(RetrievalServiceTest, ExcludedItemsAreNeverReturned) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse top;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 10), &top).ok());
  ASSERT_EQ(top.items_size(), 10);

  v1::RetrieveRequest request = KnownUserRequest(user, 10);
  for (int i : {0, 2, 5}) request.add_exclude_item_ids(top.items(i).item_id());
  request.add_exclude_item_ids("no-such-item");  // unknown ids are ignored
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(request, &response).ok());
  EXPECT_EQ(response.items_size(), 10);
  ExpectOfflineTopK(*latest_, request, response);
}

TEST_F(RetrievalServiceTest, BatchRetrieveEqualsRetrieveOneByOne) {
  v1::BatchRetrieveRequest batch;
  int k = 3;
  for (const std::string& user : KnownUsers(*latest_, 4)) {
    *batch.add_requests() = KnownUserRequest(user, k++);
  }
  *batch.add_requests() = ColdUserRequest("cold-1", 7);
  *batch.add_requests() = KnownUserRequest("cold-2", 2);
  v1::RetrieveRequest with_exclude = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 4);
  with_exclude.add_exclude_item_ids(latest_->items.ids[0]);
  with_exclude.add_exclude_item_ids(latest_->items.ids[1]);
  *batch.add_requests() = with_exclude;

  v1::BatchRetrieveResponse answers;
  const grpc::Status status = retrieval().BatchRetrieve(Context().get(), batch, &answers);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(answers.responses_size(), batch.requests_size());
  for (int i = 0; i < batch.requests_size(); ++i) {
    SCOPED_TRACE(absl::StrCat("request ", i));
    v1::RetrieveResponse single;
    ASSERT_TRUE(Retrieve(batch.requests(i), &single).ok());
    const v1::RetrieveResponse& batched = answers.responses(i);
    EXPECT_EQ(batched.model_version(), single.model_version());
    EXPECT_EQ(batched.user_known(), single.user_known());
    ASSERT_EQ(batched.items_size(), single.items_size());
    for (int j = 0; j < single.items_size(); ++j) {
      EXPECT_NEAR(batched.items(j).score(), single.items(j).score(), kScoreTolerance);
    }
    ExpectOfflineTopK(*latest_, batch.requests(i), batched);
  }

  // One bad request fails the batch, naming it.
  *batch.add_requests() = KnownUserRequest("u", 0);
  const grpc::Status bad = retrieval().BatchRetrieve(Context().get(), batch, &answers);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find(absl::StrCat("requests[", batch.requests_size() - 1, "]")),
            std::string::npos)
      << bad.error_message();
}

TEST_F(RetrievalServiceTest, ErrorMessagesQuoteABoundedPartOfTheInput) {
  v1::RetrieveRequest request = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5);
  (*request.mutable_user_features())[std::string(1 << 20, 'f')].set_categorical("x");
  v1::RetrieveResponse response;
  const grpc::Status status = Retrieve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message().size();
  EXPECT_LT(status.error_message().size(), 2048u);
}

TEST_F(RetrievalServiceTest, FiltersPerCallAreBounded) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const auto with_filters = [&](int filters, int values) {
    v1::RetrieveRequest request = KnownUserRequest(user, 5);
    for (int f = 0; f < filters; ++f) {
      v1::ItemFilter* filter = request.add_filters();
      filter->set_feature("genres");
      for (int v = 0; v < values; ++v) filter->add_any_of(absl::StrCat("g", v));
    }
    return request;
  };
  v1::RetrieveResponse response;
  EXPECT_TRUE(Retrieve(with_filters(64, 2), &response).ok());
  EXPECT_EQ(Retrieve(with_filters(65, 1), &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Retrieve(with_filters(1, 4097), &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The limit holds per call: a batch's requests share it.
  v1::BatchRetrieveRequest batch;
  for (int i = 0; i < 2; ++i) *batch.add_requests() = with_filters(40, 1);
  v1::BatchRetrieveResponse answers;
  const grpc::Status status = retrieval().BatchRetrieve(Context().get(), batch, &answers);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("requests[1]"), std::string::npos) << status.error_message();
}

// A bad filter is INVALID_ARGUMENT naming the filter and what is wrong with it, alone or
// in a batch (naming the request); the server keeps serving.
TEST_F(RetrievalServiceTest, BadFiltersAreRefusedWithWhatIsWrong) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const auto with_filter = [&](const std::string& feature, const std::vector<std::string>& any_of) {
    v1::RetrieveRequest request = KnownUserRequest(user, 5);
    v1::ItemFilter* filter = request.add_filters();
    filter->set_feature(feature);
    for (const std::string& value : any_of) filter->add_any_of(value);
    return request;
  };
  const std::vector<std::pair<v1::RetrieveRequest, std::string>> cases = {
      {with_filter("shoe_size", {"44"}),
       "filter on \"shoe_size\": not a categorical or multi-hot item feature of this model"},
      {with_filter("price", {"9.5"}), "filter on \"price\": not a categorical or multi-hot item feature of this model"},
      {with_filter("genres", {}), "filter on \"genres\" has no any_of values"},
  };
  v1::RetrieveResponse response;
  for (const auto& [request, message] : cases) {
    const grpc::Status status = Retrieve(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(status.error_message(), HasSubstr(message));
    v1::BatchRetrieveRequest batch;
    *batch.add_requests() = KnownUserRequest(user, 5);
    *batch.add_requests() = request;
    v1::BatchRetrieveResponse answers;
    const grpc::Status in_batch = retrieval().BatchRetrieve(Context().get(), batch, &answers);
    EXPECT_EQ(in_batch.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(in_batch.error_message(), HasSubstr("requests[1]"));
    EXPECT_THAT(in_batch.error_message(), HasSubstr(message));
  }
  // Too many filters, and too many values: the limits in the message.
  v1::RetrieveRequest many = KnownUserRequest(user, 5);
  for (int f = 0; f <= kMaxFilters; ++f) {
    v1::ItemFilter* filter = many.add_filters();
    filter->set_feature("genres");
    filter->add_any_of("g1");
  }
  const grpc::Status too_many = Retrieve(many, &response);
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.error_message(),
              HasSubstr(absl::StrCat("at most ", kMaxFilters, " filters with ", kMaxFilterValues, " any_of values")));
  EXPECT_THAT(too_many.error_message(), HasSubstr(absl::StrCat("got ", kMaxFilters + 1, " with ")));
  EXPECT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
}

// The limits on k and on exclusions are inclusive, and a request past one is refused
// naming the limit.
TEST_F(RetrievalServiceTest, LimitsAreInclusiveAndNamedWhenPassed) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse response;
  for (const int k : {1, kMaxK}) {
    const v1::RetrieveRequest request = KnownUserRequest(user, k);
    ASSERT_TRUE(Retrieve(request, &response).ok()) << k;
    ExpectOfflineTopK(*latest_, request, response);
  }
  for (const int k : {0, kMaxK + 1}) {
    const grpc::Status status = Retrieve(KnownUserRequest(user, k), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr(absl::StrCat("k must be in 1..", kMaxK, ", got ", k)));
  }
  // Every item but the first excluded, up to the limit (ids may repeat).
  v1::RetrieveRequest request = KnownUserRequest(user, kMaxK);
  request.set_include_history_items(true);
  const int n = static_cast<int>(latest_->items.ids.size());
  for (int i = 0; i < kMaxExclude; ++i) request.add_exclude_item_ids(latest_->items.ids[1 + i % (n - 1)]);
  ASSERT_TRUE(Retrieve(request, &response).ok()) << "exactly the limit is served";
  EXPECT_EQ(response.items_size(), 1);
  ExpectOfflineTopK(*latest_, request, response);
  request.add_exclude_item_ids("one-more");
  const grpc::Status status = Retrieve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr(absl::StrCat("at most ", kMaxExclude, " exclude_item_ids, got ", kMaxExclude + 1)));
}

// --- Through the Admin API of the same server ------------------------------------------

TEST_F(RetrievalServiceTest, StatusReportsTheModelAndCounters) {
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5), &response).ok());
  EXPECT_FALSE(Retrieve(KnownUserRequest("u", 0), &response).ok());

  const v1::GetStatusResponse status = Status();
  EXPECT_EQ(status.model_version(), latest_->model_version());
  EXPECT_EQ(status.bundle_path(), std::filesystem::canonical(trained_->path).string());
  EXPECT_EQ(status.item_count(), static_cast<int64_t>(latest_->items.ids.size()));
  EXPECT_EQ(status.embedding_dim(), latest_->embedding_dim());
  EXPECT_EQ(status.index().factory(), "Flat");
  EXPECT_EQ(status.requests_total(), 2);
  EXPECT_EQ(status.requests_failed(), 1);
  EXPECT_GT(status.retrieve_latency().max_ms(), 0.0);
  EXPECT_LE(status.retrieve_latency().p50_ms(), status.retrieve_latency().max_ms());
  EXPECT_GT(status.uptime_seconds(), 0.0);
  EXPECT_EQ(status.reloads_total(), 0);
  // One index search for the one valid call (the invalid one fails before searching).
  EXPECT_EQ(status.index_searches(), 1);
  EXPECT_EQ(status.searched_queries(), 1);
  EXPECT_EQ(status.largest_search_batch(), 1);
}

TEST_F(RetrievalServiceTest, RebuildIndexWithHnsw) {
  v1::RebuildIndexRequest rebuild;
  rebuild.mutable_params()->set_factory("HNSW32,Flat");
  rebuild.mutable_params()->set_ef_search(64);
  v1::RebuildIndexResponse rebuilt;
  const grpc::Status status = admin().RebuildIndex(Context().get(), rebuild, &rebuilt);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(rebuilt.params().factory(), "HNSW32,Flat");
  EXPECT_EQ(rebuilt.params().ef_search(), 64);
  EXPECT_EQ(rebuilt.model_version(), latest_->model_version());
  EXPECT_EQ(rebuilt.item_count(), static_cast<int64_t>(latest_->items.ids.size()));
  const v1::GetStatusResponse after = Status();
  EXPECT_EQ(after.index().factory(), "HNSW32,Flat");
  EXPECT_EQ(after.index().ef_search(), 64);

  // Approximate now, but on 300 items with ef_search 64 it should find nearly all of the
  // exact top 10; and whatever it returns must be scored right and ordered.
  for (const std::string& user : KnownUsers(*latest_, 3)) {
    v1::RetrieveRequest request = KnownUserRequest(user, 10);
    request.set_include_history_items(true);  // compared with the exact top 10 of all items
    v1::RetrieveResponse response;
    ASSERT_TRUE(Retrieve(request, &response).ok());
    ASSERT_EQ(response.items_size(), 10);
    const std::map<std::string, float> scores =
        OfflineScores(*latest_, OfflineUserRow(*latest_, request));
    std::vector<float> sorted;
    for (const auto& [id, score] : scores) sorted.push_back(score);
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    int in_exact_top = 0;
    for (int i = 0; i < response.items_size(); ++i) {
      const float score = scores.at(response.items(i).item_id());
      EXPECT_NEAR(response.items(i).score(), score, kScoreTolerance);
      if (i > 0) {
        EXPECT_GE(response.items(i - 1).score(), response.items(i).score());
      }
      if (score >= sorted[9] - kScoreTolerance) ++in_exact_top;
    }
    EXPECT_GE(in_exact_top, 8) << user;
  }

  // An invalid factory fails and keeps the HNSW index.
  rebuild.mutable_params()->set_factory("NoSuchIndex");
  EXPECT_FALSE(admin().RebuildIndex(Context().get(), rebuild, &rebuilt).ok());
  EXPECT_EQ(Status().index().factory(), "HNSW32,Flat");
}

}  // namespace
}  // namespace twotower
