// End to end: the real binaries, as an operator runs them. The suite makes synthetic data
// and trains two model versions with twotower_synth / twotower_train; every test starts
// its own twotower_server on free loopback ports (so tests can mutate the server and still
// run alone, as ctest runs them), talks to it through the generated stubs, the C++ CLI
// and the Python client, and stops it with SIGTERM, which must exit 0 within 5 s.
#include <arpa/inet.h>
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bundle/bundle.h"
#include "gtest/gtest.h"
#include "index/exact_scan.h"
#include "model/tower.h"
#include "tests/grpc_raw.h"
#include "tests/offline_model.h"
#include "tests/raw_http2.h"
#include "tests/server_process.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"
#include "util/file.h"
#include "util/text_proto.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using ::twotower::testing::ScopedTempDir;
using ::twotower::testing::ServerProcess;
using ::twotower::testing::Spawn;
using ::twotower::testing::RunCommand;
using ::twotower::testing::RunResult;
using ::twotower::testing::Context;
using ::twotower::testing::BinaryDir;
using ::twotower::testing::SourceDir;
using ::twotower::testing::WriteText;
using ::twotower::testing::ColdUserRequest;
using ::twotower::testing::ExpectOfflineTopK;
using ::twotower::testing::KnownUserRequest;
using ::twotower::testing::KnownUsers;
using ::twotower::testing::OfflineUserRow;
using ::twotower::testing::SeenItemsOf;
using ::twotower::testing::kScoreTolerance;


// Debian's python3-grpcio / python3-protobuf are installed for the system interpreter,
// which may not be the first python3 on PATH (pyenv, venvs).
std::string Python() {
  const char* python = std::getenv("TWOTOWER_PYTHON");
  return python != nullptr ? python : "/usr/bin/python3";
}

// The command line of the Python package (client/python) used in place: its sources and
// the generated twotower.v1 modules (target python_client) on PYTHONPATH, then `args`.
std::vector<std::string> PythonClient(const std::vector<std::string>& args) {
  std::vector<std::string> command = {"/usr/bin/env",
                                      "PYTHONPATH=" + SourceDir() + "/client/python:" + BinaryDir() + "/python",
                                      Python(), "-m", "twotower.client"};
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

std::string ReadLink(const std::string& link) {
  std::error_code error;
  const std::filesystem::path target = std::filesystem::read_symlink(link, error);
  return error ? std::string() : target.string();
}


// First item id of a CLI "rank item_id score" listing (header lines skipped).
std::string TopItemOfListing(const std::string& out) {
  for (const absl::string_view line : absl::StrSplit(out, '\n')) {
    const std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.size() == 3 && words[0] == "1") return words[1];
  }
  return "";
}

// --- Fixture ----------------------------------------------------------------------------

class E2eServerTest : public ::testing::Test {
 protected:
  // Data + two trained versions, once per test process. Bundles: first_ (older), latest_.
  static void SetUpTestSuite() {
    dir_ = std::make_unique<ScopedTempDir>();
    const std::string data = dir_->Join("data");
    const std::string bundles = dir_->Join("bundles");
    const RunResult synth = RunCommand({BinaryDir() + "/twotower_synth", "--out_dir=" + data,
                                 "--users=300", "--items=200"});
    if (synth.exit_code != 0) {
      setup_error_ = "twotower_synth failed:\n" + synth.out;
      return;
    }
    std::vector<std::string> versions;
    for (int run = 0; run < 2; ++run) {
      const RunResult train = RunCommand({BinaryDir() + "/twotower_train",
                                   "--config=" + SourceDir() + "/configs/synthetic.textproto",
                                   "--data_dir=" + data, "--export_dir=" + bundles,
                                   "--epochs=2"});
      if (train.exit_code != 0) {
        setup_error_ = "twotower_train failed:\n" + train.out;
        return;
      }
      versions.push_back(ReadLink(bundles + "/latest"));
    }
    if (versions[0].empty() || versions[0] == versions[1]) {
      setup_error_ = "training twice did not give two bundles under " + bundles + "/latest";
      return;
    }
    first_path_ = bundles + "/" + versions[0];
    latest_path_ = bundles + "/latest";
    absl::StatusOr<Bundle> first = ReadBundle(first_path_);
    absl::StatusOr<Bundle> latest = ReadBundle(latest_path_);
    if (!first.ok() || !latest.ok()) {
      setup_error_ = absl::StrCat("ReadBundle: ", first.status().ToString(), " / ",
                                  latest.status().ToString());
      return;
    }
    first_ = std::make_unique<Bundle>(*std::move(first));
    latest_ = std::make_unique<Bundle>(*std::move(latest));
  }

  static void TearDownTestSuite() {
    first_.reset();
    latest_.reset();
    dir_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_EQ(server_.Start(latest_path_), absl::OkStatus());
    ASSERT_EQ(server_.version(), latest_->model_version());
  }

  void TearDown() override {
    if (!server_.running()) return;
    const int status = server_.Stop(SIGTERM, std::chrono::seconds(5));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "server did not exit 0 within 5 s of SIGTERM (wait status " << status << ")";
  }

  grpc::Status Retrieve(const v1::RetrieveRequest& request, v1::RetrieveResponse* response) {
    return server_.retrieval().Retrieve(Context().get(), request, response);
  }

  v1::GetStatusResponse Status() {
    v1::GetStatusResponse status;
    const grpc::Status rpc = server_.admin().GetStatus(Context().get(), {}, &status);
    EXPECT_TRUE(rpc.ok()) << rpc.error_message();
    return status;
  }

  static inline std::unique_ptr<ScopedTempDir> dir_;
  static inline std::string setup_error_;
  static inline std::string first_path_, latest_path_;
  static inline std::unique_ptr<Bundle> first_, latest_;
  ServerProcess server_;
};

// --- Retrieval --------------------------------------------------------------------------

// Concurrent calls with every round handed off (--search_hand_off_ms=0: the search of a
// call that arrives while a round runs is queued, and a background thread runs it, in a
// batch with the others queued): every answer is still the offline model's top k, none
// fails, and (calling until the status shows a batch of two or more, or 20 s) queued
// searches were answered together.
TEST_F(E2eServerTest, QueuedSearchesHandedOffAreAnsweredExactly) {
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--search_hand_off_ms=0"}), absl::OkStatus());
  const std::vector<std::string> users = KnownUsers(*latest_, 6);
  std::atomic<int> failed = 0;
  std::atomic<bool> batched = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      const auto stub = testing::NewRetrievalStub(server.address(), c);
      for (int i = 0; i < 40 || (!batched.load() && std::chrono::steady_clock::now() < until); ++i) {
        const v1::RetrieveRequest request = KnownUserRequest(users[(c + i) % users.size()], 5 + i % 7);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::RetrieveResponse response;
        if (!stub->Retrieve(&context, request, &response).ok()) {
          ++failed;
          continue;
        }
        ExpectOfflineTopK(*latest_, request, response);
        if (c == 0 && i % 20 == 19) {
          grpc::ClientContext status_context;
          v1::GetStatusResponse status;
          if (server.admin().GetStatus(&status_context, v1::GetStatusRequest(), &status).ok() &&
              status.largest_search_batch() >= 2) {
            batched = true;
          }
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_TRUE(batched.load());
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// --- Admin ------------------------------------------------------------------------------

TEST_F(E2eServerTest, CorruptBundleReloadFailsAndTheOldModelKeepsServing) {
  const std::string corrupt = dir_->Join("corrupt-" + std::to_string(::getpid()));
  std::filesystem::copy(first_path_, corrupt, std::filesystem::copy_options::recursive);
  {
    std::fstream file(corrupt + "/item_tower.pb", std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(file.is_open());
    file.seekg(100);
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5a);
    file.seekp(100);
    file.write(&byte, 1);
  }
  v1::ReloadModelRequest reload;
  reload.set_bundle_path(corrupt);
  v1::ReloadModelResponse reloaded;
  const grpc::Status status = server_.admin().ReloadModel(Context().get(), reload, &reloaded);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_message().find("item_tower.pb"), std::string::npos)
      << status.error_message();

  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
  EXPECT_EQ(response.model_version(), latest_->model_version());
  ExpectOfflineTopK(*latest_, KnownUserRequest(user, 5), response);
  const v1::GetStatusResponse after = Status();
  EXPECT_EQ(after.model_version(), latest_->model_version());
  EXPECT_EQ(after.reloads_total(), 1);
  EXPECT_EQ(after.reloads_failed(), 1);
}

TEST_F(E2eServerTest, ReloadSwitchesTheModelVersion) {
  v1::ReloadModelRequest reload;
  reload.set_bundle_path(first_path_);
  v1::ReloadModelResponse reloaded;
  const grpc::Status status = server_.admin().ReloadModel(Context().get(), reload, &reloaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reloaded.model_version(), first_->model_version());
  EXPECT_EQ(reloaded.previous_model_version(), latest_->model_version());
  EXPECT_EQ(reloaded.item_count(), static_cast<int64_t>(first_->items.ids.size()));

  for (const std::string& user : KnownUsers(*first_, 3)) {
    const v1::RetrieveRequest request = KnownUserRequest(user, 10);
    v1::RetrieveResponse response;
    ASSERT_TRUE(Retrieve(request, &response).ok());
    EXPECT_EQ(response.model_version(), first_->model_version());
    ExpectOfflineTopK(*first_, request, response);
  }
  EXPECT_EQ(Status().model_version(), first_->model_version());
  EXPECT_EQ(Status().bundle_path(), std::filesystem::canonical(first_path_).string());
}

// Requests racing with reloads each see one whole model: the version they report and
// results that model computes, never a mix.
TEST_F(E2eServerTest, RequestsDuringReloadsSeeOneModelEach) {
  const std::vector<std::string> users = KnownUsers(*latest_, 4);
  std::atomic<bool> done{false};
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  std::atomic<int> failed{0};
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      int i = t;
      while (!done.load()) {
        const v1::RetrieveRequest request = KnownUserRequest(users[i++ % users.size()], 10);
        v1::RetrieveResponse response;
        const grpc::Status status = Retrieve(request, &response);
        if (!status.ok()) ++failed;
        ASSERT_TRUE(status.ok()) << status.error_message();
        const Bundle& model =
            response.model_version() == first_->model_version() ? *first_ : *latest_;
        ASSERT_EQ(response.model_version(), model.model_version());
        ExpectOfflineTopK(model, request, response);
        ++answered;
      }
    });
  }
  // 20 rounds of ReloadModel (alternating two model versions) and RebuildIndex while 4
  // clients keep calling: zero failed requests, every answer exactly one model's.
  for (int round = 0; round < 20; ++round) {
    v1::ReloadModelRequest request;
    request.set_bundle_path(round % 2 == 0 ? first_path_ : latest_path_);
    v1::ReloadModelResponse response;
    const grpc::Status status = server_.admin().ReloadModel(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    v1::RebuildIndexRequest rebuild;  // same (exact) parameters: answers stay comparable
    v1::RebuildIndexResponse rebuilt;
    const grpc::Status rebuild_status = server_.admin().RebuildIndex(Context().get(), rebuild, &rebuilt);
    EXPECT_TRUE(rebuild_status.ok()) << rebuild_status.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  done = true;
  for (std::thread& client : clients) client.join();
  EXPECT_GT(answered.load(), 20);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(Status().reloads_total(), 20);
}

// The index persisted in the bundle (twotower_index_bundle writes a new bundle with it):
// a server started on it reads it (status source "bundle") and answers exactly as a
// server that built the same index from the item vectors; --index left empty follows
// each reloaded bundle's index; an index.faiss that does not match its record fails the
// reload and the old model keeps serving; RebuildIndex still builds in memory.
TEST_F(E2eServerTest, AnIndexPersistedInTheBundleIsReadAndAnswersAsBuildingIt) {
  const std::string indexed = dir_->Join("indexed-" + std::to_string(::getpid()));
  const RunResult tool = RunCommand({BinaryDir() + "/twotower_index_bundle", "--bundle=" + latest_path_,
                                     "--index=IVF8,Flat", "--out=" + indexed});
  ASSERT_EQ(tool.exit_code, 0) << tool.out;
  EXPECT_NE(tool.out.find("index IVF8,Flat built in"), std::string::npos) << tool.out;
  // A second run does not overwrite it; a bad factory is refused before any work.
  EXPECT_NE(RunCommand({BinaryDir() + "/twotower_index_bundle", "--bundle=" + latest_path_, "--index=IVF8,Flat",
                        "--out=" + indexed}).exit_code, 0);
  EXPECT_EQ(RunCommand({BinaryDir() + "/twotower_index_bundle", "--bundle=" + latest_path_, "--index=IVF0,Flat",
                        "--out=" + indexed + "-bad"}).exit_code, 2);

  ServerProcess reads, builds;
  ASSERT_EQ(reads.Start(indexed), absl::OkStatus());
  ASSERT_EQ(builds.Start(latest_path_, {"--index=IVF8,Flat"}), absl::OkStatus());
  EXPECT_EQ(reads.version(), latest_->model_version());  // the same model
  const auto status_of = [](ServerProcess& server) {
    v1::GetStatusResponse status;
    EXPECT_TRUE(server.admin().GetStatus(Context().get(), {}, &status).ok());
    return status;
  };
  EXPECT_EQ(status_of(reads).index().factory(), "IVF8,Flat");
  EXPECT_EQ(status_of(reads).index().source(), "bundle");
  EXPECT_EQ(status_of(builds).index().source(), "built");
  for (const std::string& user : KnownUsers(*latest_, 40)) {
    v1::RetrieveResponse a, b;
    ASSERT_TRUE(reads.retrieval().Retrieve(Context().get(), KnownUserRequest(user, 10), &a).ok());
    ASSERT_TRUE(builds.retrieval().Retrieve(Context().get(), KnownUserRequest(user, 10), &b).ok());
    ASSERT_EQ(a.items_size(), 10);
    ASSERT_EQ(a.items_size(), b.items_size());
    for (int i = 0; i < a.items_size(); ++i) {
      EXPECT_EQ(a.items(i).item_id(), b.items(i).item_id()) << user << " rank " << i;
      EXPECT_EQ(a.items(i).score(), b.items(i).score()) << user << " rank " << i;
    }
  }
  // RebuildIndex builds in memory, whatever the bundle carries.
  v1::RebuildIndexRequest rebuild;
  rebuild.mutable_params()->set_nprobe(8);
  v1::RebuildIndexResponse rebuilt;
  ASSERT_TRUE(reads.admin().RebuildIndex(Context().get(), rebuild, &rebuilt).ok());
  EXPECT_EQ(status_of(reads).index().source(), "built");
  EXPECT_EQ(status_of(reads).index().nprobe(), 8);

  // The fixture's server (--index left empty, on the bundle without an index: Flat)
  // follows the bundle it reloads.
  v1::ReloadModelRequest reload;
  v1::ReloadModelResponse reloaded;
  reload.set_bundle_path(indexed);
  ASSERT_TRUE(server_.admin().ReloadModel(Context().get(), reload, &reloaded).ok());
  EXPECT_EQ(Status().index().factory(), "IVF8,Flat");
  EXPECT_EQ(Status().index().source(), "bundle");
  reload.set_bundle_path(first_path_);
  ASSERT_TRUE(server_.admin().ReloadModel(Context().get(), reload, &reloaded).ok());
  EXPECT_EQ(Status().index().factory(), "Flat");

  // An index file its record does not describe: the reload fails naming the file, and
  // the old model serves on.
  const std::string wrong = dir_->Join("wrong-index-" + std::to_string(::getpid()));
  std::filesystem::copy(indexed, wrong, std::filesystem::copy_options::recursive);
  {
    v1::BundleManifest manifest;
    ASSERT_TRUE(ReadTextProtoFile(wrong + "/MANIFEST", &manifest).ok());
    manifest.mutable_index()->set_factory("IVF4,Flat");
    ASSERT_TRUE(WriteFileDurably(wrong + "/MANIFEST", ToTextProto(manifest)).ok());
  }
  reload.set_bundle_path(wrong);
  const grpc::Status refused = server_.admin().ReloadModel(Context().get(), reload, &reloaded);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(refused.error_message().find("index.faiss: an IVF index of 8 lists, the record says IVF4,Flat"),
            std::string::npos) << refused.error_message();
  EXPECT_EQ(Status().model_version(), first_->model_version());
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(KnownUsers(*first_, 1).at(0), 5), &response).ok());
  EXPECT_EQ(response.model_version(), first_->model_version());
  // A server asked for the wrong-record bundle at start refuses to start.
  ServerProcess refuses;
  EXPECT_FALSE(refuses.Start(wrong).ok());

  // An explicit --index other than the bundle's is built (and the server says so).
  ServerProcess other;
  ASSERT_EQ(other.Start(indexed, {"--index=HNSW16"}), absl::OkStatus());
  EXPECT_EQ(status_of(other).index().factory(), "HNSW16");
  EXPECT_EQ(status_of(other).index().source(), "built");
  for (ServerProcess* server : {&reads, &builds, &other}) server->Stop(SIGTERM, std::chrono::seconds(5));
}

// The exact index's fp16 first pass: on by default where it can be made, reported by
// status, switched off and on by RebuildIndex (kept when the request leaves it unset),
// and the answers are the same either way, scores bit for bit.
TEST_F(E2eServerTest, RebuildIndexSwitchesTheHalfFirstPass) {
  const int dim = latest_->embedding_dim();
  const bool can = HalfRows::Of(std::vector<float>(dim, 1.0f), dim).has_value();
  EXPECT_EQ(Status().index().half_first_pass(), can);
  const auto answers = [&] {
    std::vector<std::pair<std::string, float>> all;
    for (const std::string& user : KnownUsers(*latest_, 3)) {
      v1::RetrieveResponse response;
      EXPECT_TRUE(Retrieve(KnownUserRequest(user, 20), &response).ok());
      for (const v1::ScoredItem& item : response.items()) all.emplace_back(item.item_id(), item.score());
    }
    return all;
  };
  const auto with = answers();
  // Off through the command-line client (which refuses anything but on / off).
  const std::string client = BinaryDir() + "/twotower_client";
  const std::string admin = "--admin_address=" + server_.admin_address();
  EXPECT_EQ(RunCommand({client, "rebuild-index", admin, "--half_first_pass=maybe"}).exit_code, 2);
  const RunResult off = RunCommand({client, "rebuild-index", admin, "--half_first_pass=off"});
  ASSERT_EQ(off.exit_code, 0) << off.out;
  EXPECT_EQ(off.out.find("fp16 first pass"), std::string::npos) << off.out;
  EXPECT_FALSE(Status().index().half_first_pass());
  EXPECT_EQ(answers(), with);
  v1::RebuildIndexResponse rebuilt;
  ASSERT_TRUE(server_.admin().RebuildIndex(Context().get(), v1::RebuildIndexRequest(), &rebuilt).ok());
  EXPECT_FALSE(rebuilt.params().half_first_pass());  // unset: kept
  v1::RebuildIndexRequest rebuild;
  rebuild.mutable_params()->set_half_first_pass(true);
  ASSERT_TRUE(server_.admin().RebuildIndex(Context().get(), rebuild, &rebuilt).ok());
  EXPECT_EQ(rebuilt.params().half_first_pass(), can);
  EXPECT_EQ(answers(), with);
}

// The score the server must give item `entity` (features through the bundle's item
// tower) for `request`'s user.
float OfflineScoreOfNewItem(const Bundle& bundle, const v1::Entity& entity,
                            const v1::RetrieveRequest& request) {
  EncodedTable rows = bundle.item.encoder.NewTable();
  absl::StatusOr<std::vector<RawValue>> values = bundle.item.encoder.FromRequest(entity.features());
  EXPECT_THAT(values, IsOk());
  bundle.item.encoder.Encode(entity.id(), &*values, &rows);
  const std::vector<float> item = bundle.item.tower.EmbedAll(rows);
  const std::vector<float> user = bundle.user.tower.EmbedAll(OfflineUserRow(bundle, request));
  float score = 0;
  for (size_t d = 0; d < item.size(); ++d) score += item[d] * user[d];
  return score;
}

std::map<std::string, float> AllScores(const v1::RetrieveResponse& response) {
  std::map<std::string, float> scores;
  for (const v1::ScoredItem& item : response.items()) scores[item.item_id()] = item.score();
  return scores;
}

TEST_F(E2eServerTest, OnlineItemChangesAreVisibleAndSurviveARestart) {
  ScopedTempDir state;
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--state_dir=" + state.path()}), absl::OkStatus());
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const int catalogue = static_cast<int>(latest_->items.ids.size());
  v1::RetrieveRequest everything = KnownUserRequest(user, catalogue + 1);
  everything.set_include_history_items(true);  // the user's training items too
  // One of the user's training items gets new features: it stays left out by default.
  const std::set<std::string> seen = SeenItemsOf(*latest_, user);
  ASSERT_FALSE(seen.empty());
  const std::string seen_item = *seen.rbegin();
  ASSERT_NE(seen_item, latest_->items.ids[0]);
  ASSERT_NE(seen_item, latest_->items.ids[1]);

  v1::UpsertItemsRequest upsert;
  v1::Entity* fresh = upsert.add_items();
  fresh->set_id("brand-new-item");
  (*fresh->mutable_features())["genres"].mutable_multi_hot()->add_values("g3");
  (*fresh->mutable_features())["brand"].set_categorical("b7");
  (*fresh->mutable_features())["price"].set_numeric(12.5);
  v1::Entity* replaced = upsert.add_items();
  replaced->set_id(latest_->items.ids[0]);  // an existing item gets new features
  (*replaced->mutable_features())["genres"].mutable_multi_hot()->add_values("g5");
  v1::Entity* seen_replaced = upsert.add_items();
  seen_replaced->set_id(seen_item);
  (*seen_replaced->mutable_features())["genres"].mutable_multi_hot()->add_values("g5");
  v1::UpsertItemsResponse upserted;
  ASSERT_TRUE(server.admin().UpsertItems(Context().get(), upsert, &upserted).ok());
  EXPECT_EQ(upserted.upserted(), 3);
  EXPECT_EQ(upserted.item_count(), catalogue + 1);

  v1::RemoveItemsRequest remove;
  const std::string gone = latest_->items.ids[1];
  remove.add_item_ids(gone);
  remove.add_item_ids("never-existed");
  v1::RemoveItemsResponse removed;
  ASSERT_TRUE(server.admin().RemoveItems(Context().get(), remove, &removed).ok());
  EXPECT_EQ(removed.removed(), 1);
  EXPECT_EQ(removed.item_count(), catalogue);

  // Both servers' views: this one (before and after a restart) must show the changes.
  for (int pass = 0; pass < 2; ++pass) {
    v1::RetrieveResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ASSERT_TRUE(server.retrieval().Retrieve(&context, everything, &response).ok());
    const std::map<std::string, float> scores = AllScores(response);
    EXPECT_EQ(response.items_size(), catalogue) << "pass " << pass;
    ASSERT_TRUE(scores.contains("brand-new-item")) << "pass " << pass;
    EXPECT_NEAR(scores.at("brand-new-item"), OfflineScoreOfNewItem(*latest_, *fresh, everything), kScoreTolerance);
    ASSERT_TRUE(scores.contains(replaced->id()));
    EXPECT_NEAR(scores.at(replaced->id()), OfflineScoreOfNewItem(*latest_, *replaced, everything), kScoreTolerance);
    EXPECT_FALSE(scores.contains(gone)) << "pass " << pass;
    for (int i = 1; i < response.items_size(); ++i) {
      EXPECT_GE(response.items(i - 1).score(), response.items(i).score());
    }
    ASSERT_TRUE(scores.contains(seen_item)) << "pass " << pass;
    v1::RetrieveRequest unseen = everything;
    unseen.set_include_history_items(false);
    v1::RetrieveResponse unseen_response;
    grpc::ClientContext unseen_context;
    ASSERT_TRUE(server.retrieval().Retrieve(&unseen_context, unseen, &unseen_response).ok());
    const std::map<std::string, float> unseen_scores = AllScores(unseen_response);
    EXPECT_TRUE(unseen_scores.contains("brand-new-item"));
    for (const std::string& id : seen) EXPECT_FALSE(unseen_scores.contains(id)) << id << ", pass " << pass;
    // Filters see upserted items too.
    v1::RetrieveRequest filtered = KnownUserRequest(user, catalogue);
    v1::ItemFilter* brand = filtered.add_filters();
    brand->set_feature("brand");
    brand->add_any_of("b7");
    v1::RetrieveResponse only;
    grpc::ClientContext filter_context;
    ASSERT_TRUE(server.retrieval().Retrieve(&filter_context, filtered, &only).ok());
    EXPECT_TRUE(AllScores(only).contains("brand-new-item"));
    if (pass == 0) {  // restart on the same state directory
      ASSERT_EQ(WEXITSTATUS(server.Stop(SIGTERM, std::chrono::seconds(5))), 0);
      ASSERT_EQ(server.Start(latest_path_, {"--state_dir=" + state.path()}), absl::OkStatus());
    }
  }
  // The fixture's server (no state_dir) never saw any of it.
  v1::RetrieveResponse untouched;
  ASSERT_TRUE(Retrieve(everything, &untouched).ok());
  EXPECT_FALSE(AllScores(untouched).contains("brand-new-item"));

  // Bad upserts change nothing.
  v1::UpsertItemsRequest bad;
  bad.add_items()->set_id("");
  v1::UpsertItemsResponse ignored;
  EXPECT_EQ(server.admin().UpsertItems(Context().get(), bad, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::UpsertItemsRequest twice;
  twice.add_items()->set_id("x");
  twice.add_items()->set_id("x");
  EXPECT_EQ(server.admin().UpsertItems(Context().get(), twice, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// Old models are freed once their last request ends: 50 reloads do not pile them up.
TEST_F(E2eServerTest, MemoryStaysBoundedOverFiftyReloads) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's quarantine holds freed memory on purpose; the normal "
                  "build runs this test";
#endif
  // A bigger model than the suite's (20,000 items: several MB loaded), so 50 leaked copies
  // could not hide in allocator noise.
  ScopedTempDir dir;
  const RunResult synth = RunCommand({BinaryDir() + "/twotower_synth", "--out_dir=" + dir.Join("data"),
                                      "--users=500", "--items=20000"});
  ASSERT_EQ(synth.exit_code, 0);
  for (const char* out : {"a", "b"}) {
    const RunResult train = RunCommand({BinaryDir() + "/twotower_train",
                                        "--config=" + SourceDir() + "/configs/synthetic.textproto",
                                        "--data_dir=" + dir.Join("data"), "--export_dir=" + dir.Join(out),
                                        "--epochs=1"});
    ASSERT_EQ(train.exit_code, 0) << train.out;
  }
  ServerProcess server;
  ASSERT_EQ(server.Start(dir.Join("a/latest")), absl::OkStatus());
  const auto reload = [&](int i) {
    v1::ReloadModelRequest request;
    request.set_bundle_path(dir.Join(i % 2 == 0 ? "b/latest" : "a/latest"));
    v1::ReloadModelResponse response;
    return server.admin().ReloadModel(Context().get(), request, &response).ok();
  };
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(reload(i));  // warm up the allocator
  const double before = server.ResidentMb();
  ASSERT_GT(before, 0);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(reload(i)) << "reload " << i;
    v1::RetrieveRequest request;
    request.set_user_id("u00001");
    request.set_k(5);
    v1::RetrieveResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(server.retrieval().Retrieve(&context, request, &response).ok());
  }
  const double after = server.ResidentMb();
  // One loaded model here is ~8 MB (bundle, index, maps); 50 leaked copies would add
  // ~400 MB, allocator slack a few tens.
  EXPECT_LT(after, before + 100) << "RSS " << before << " MB -> " << after << " MB";
  std::printf("RSS over 50 reloads: %.1f MB -> %.1f MB\n", before, after);
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// kill -9 of the trainer at any moment leaves nothing a server would load by mistake:
// every bundle directory reads back valid, or is a temp directory ReadBundle refuses.
TEST_F(E2eServerTest, KilledTrainerLeavesNoBundleTheServerWouldAccept) {
  ScopedTempDir dir;
  ASSERT_EQ(RunCommand({BinaryDir() + "/twotower_synth", "--out_dir=" + dir.Join("data"),
                        "--users=300", "--items=5000"}).exit_code, 0);
  const std::string exports = dir.Join("bundles");
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::vector<std::string> args = {BinaryDir() + "/twotower_train",
                                           "--config=" + SourceDir() + "/configs/synthetic.textproto",
                                           "--data_dir=" + dir.Join("data"), "--export_dir=" + exports,
                                           "--epochs=1"};
    const pid_t pid = Spawn(args, -1);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + 60 * attempt));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  int complete = 0, partial = 0;
  // A trainer killed before it created --export_dir (likely on a slow or sanitizer
  // build) leaves no directory at all: a valid outcome, with nothing to serve.
  std::error_code no_exports;
  for (const auto& entry : std::filesystem::directory_iterator(exports, no_exports)) {
    const std::string name = entry.path().filename().string();
    if (name == "latest") continue;
    absl::StatusOr<Bundle> bundle = ReadBundle(entry.path().string());
    if (name.find(".tmp-") != std::string::npos) {
      // Left by a kill before the rename: it may even be complete (killed after its fsync),
      // but nothing points at it; only final names and `latest` are ever served.
      ++partial;
    } else {
      EXPECT_TRUE(bundle.ok()) << name << ": " << bundle.status();
      ++complete;
    }
  }
  EXPECT_TRUE(!no_exports || no_exports == std::errc::no_such_file_or_directory)
      << exports << ": " << no_exports.message();
  if (std::filesystem::exists(exports + "/latest")) {
    EXPECT_TRUE(ReadBundle(exports + "/latest").ok()) << "latest points at a broken bundle";
  }
  std::printf("after 8 kills: %d complete bundles, %d partial exports\n", complete, partial);
}

TEST_F(E2eServerTest, AdminTokenIsRequiredWhenConfigured) {
  ScopedTempDir dir;
  testing::WriteText(dir.Join("token"), "s3cret-token\n");
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--admin_token_file=" + dir.Join("token")}), absl::OkStatus());
  v1::GetStatusResponse status;
  {
    grpc::ClientContext context;
    EXPECT_EQ(server.admin().GetStatus(&context, {}, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong-token");
    EXPECT_EQ(server.admin().GetStatus(&context, {}, &status).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer s3cret-token");
    EXPECT_TRUE(server.admin().GetStatus(&context, {}, &status).ok());
  }
  {  // Every mutation is guarded too.
    grpc::ClientContext context;
    v1::ReloadModelRequest reload;
    reload.set_bundle_path(first_path_);
    v1::ReloadModelResponse response;
    EXPECT_EQ(server.admin().ReloadModel(&context, reload, &response).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The CLI sends the token from a file.
  const std::string client = BinaryDir() + "/twotower_client";
  EXPECT_EQ(RunCommand({client, "status", "--admin_address=" + server.admin_address()}).exit_code, 1);
  const RunResult ok = RunCommand({client, "status", "--admin_address=" + server.admin_address(),
                                   "--admin_token_file=" + dir.Join("token")});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  // Retrieval needs no token.
  v1::RetrieveResponse answer;
  grpc::ClientContext context;
  EXPECT_TRUE(server.retrieval().Retrieve(&context, KnownUserRequest(KnownUsers(*latest_, 1).at(0), 3), &answer).ok());
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

TEST_F(E2eServerTest, ReloadOnlyLoadsBundlesUnderTheRoot) {
  const std::string root = std::filesystem::path(latest_path_).parent_path().string();
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--bundle_root=" + root}), absl::OkStatus());
  ScopedTempDir outside;
  std::filesystem::copy(std::filesystem::canonical(first_path_), outside.Join("copy"),
                        std::filesystem::copy_options::recursive);
  std::filesystem::create_directory_symlink(outside.Join("copy"), root + "/sneaky-link");
  const auto reload = [&](const std::string& path) {
    grpc::ClientContext context;
    v1::ReloadModelRequest request;
    request.set_bundle_path(path);
    v1::ReloadModelResponse response;
    return server.admin().ReloadModel(&context, request, &response).error_code();
  };
  EXPECT_EQ(reload(outside.Join("copy")), grpc::StatusCode::PERMISSION_DENIED);
  // A `../` path that leads to a real bundle outside the root: refused, not just missing.
  std::string escape = root;
  for (int up = 0; up < 32; ++up) escape += "/..";  // past "/" stays at "/"
  EXPECT_EQ(reload(escape + outside.Join("copy")), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(reload(root + "/../" + std::filesystem::path(root).filename().string() + "/../x"),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(reload(root + "/sneaky-link"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(reload(first_path_), grpc::StatusCode::OK);  // inside: fine
  std::filesystem::remove(root + "/sneaky-link");
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

TEST_F(E2eServerTest, RetrievalOverTls) {
  ScopedTempDir dir;
  // A self-signed certificate for 127.0.0.1, made by the openssl CLI for this test only.
  const RunResult made = RunCommand(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
       "-keyout", dir.Join("key.pem"), "-out", dir.Join("cert.pem"), "-subj", "/CN=localhost",
       "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"});
  ASSERT_EQ(made.exit_code, 0) << "openssl req failed";
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--tls_cert=" + dir.Join("cert.pem"),
                                        "--tls_key=" + dir.Join("key.pem")}),
            absl::OkStatus());
  std::ifstream in(dir.Join("cert.pem"));
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  auto secure = v1::Retrieval::NewStub(grpc::CreateChannel(server.address(), grpc::SslCredentials(tls)));
  const v1::RetrieveRequest request = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5);
  v1::RetrieveResponse response;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status status = secure->Retrieve(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.items_size(), 5);
  }
  {  // A plaintext client cannot talk to the TLS port.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    EXPECT_FALSE(server.retrieval().Retrieve(&context, request, &response).ok());
  }
  // The CLI with --tls_ca.
  const RunResult cli = RunCommand({BinaryDir() + "/twotower_client", "retrieve",
                                    "--address=" + server.address(), "--tls_ca=" + dir.Join("cert.pem"),
                                    "--user=" + KnownUsers(*latest_, 1).at(0), "--k=3"});
  EXPECT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// With --max_request_bytes below gRPC's own 4 MiB default, so the flag is what refuses.
TEST_F(E2eServerTest, OversizedRequestsAreRejected) {
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--max_request_bytes=1048576"}), absl::OkStatus());
  const auto retrieve = [&](size_t value_bytes) {
    v1::RetrieveRequest request = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5);
    (*request.mutable_user_features())["segment"].set_categorical(std::string(value_bytes, 'x'));
    grpc::ClientContext context;
    v1::RetrieveResponse response;
    return server.retrieval().Retrieve(&context, request, &response).error_code();
  };
  EXPECT_EQ(retrieve(2 << 20), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(retrieve(512 << 10), grpc::StatusCode::OK);  // under the limit: served (OOV value)
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// Beyond --max_in_flight concurrent calls, a call fails at once with RESOURCE_EXHAUSTED;
// the others are served. (Six clients calling back to back against a limit of one, until
// a call has been refused or 20 s have passed: calls overlap within milliseconds.)
TEST_F(E2eServerTest, CallsBeyondTheInFlightLimitAreRefused) {
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--max_in_flight=1"}), absl::OkStatus());
  const v1::RetrieveRequest request = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 50);
  std::atomic<int> served = 0, refused = 0, other = 0;
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      const auto stub = testing::NewRetrievalStub(server.address(), c);
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      for (int i = 0; i < 200 || (refused.load() == 0 && std::chrono::steady_clock::now() < until); ++i) {
        grpc::ClientContext context;
        v1::RetrieveResponse response;
        const grpc::Status status = stub->Retrieve(&context, request, &response);
        if (status.ok() && response.items_size() > 0) {
          ++served;
        } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_GT(served.load(), 0);
  EXPECT_GT(refused.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(5)) >> 8, 0);
}

// --- Process behaviour, CLI and Python client --------------------------------------------

TEST_F(E2eServerTest, HealthCheckReportsServing) {
  const std::string client = BinaryDir() + "/twotower_client";
  const RunResult whole = RunCommand({client, "health", "--address=" + server_.address()});
  EXPECT_EQ(whole.exit_code, 0) << whole.out;
  EXPECT_EQ(whole.out, "SERVING\n");
  const RunResult retrieval = RunCommand({client, "health", "--address=" + server_.address(),
                                   "--service=twotower.v1.Retrieval"});
  EXPECT_EQ(retrieval.exit_code, 0) << retrieval.out;
  const RunResult unknown =
      RunCommand({client, "health", "--address=" + server_.address(), "--service=no.such.Service"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out;
}

// A user's history is never handed back unless asked for: the stored history of a known
// user, and the history a request passes; k items still come back.
TEST_F(E2eServerTest, HistoryItemsAreNotReturnedUnlessAsked) {
  const std::string bundles = dir_->Join("history-bundles");
  const RunResult train = RunCommand(
      {BinaryDir() + "/twotower_train", "--config=" + SourceDir() + "/configs/synthetic.textproto",
       "--data_dir=" + dir_->Join("data"), "--export_dir=" + bundles, "--epochs=1",
       "--override=data { users { features { name: \"history\" kind: KIND_HISTORY embedding_dim: 8 "
       "history_length: 5 } } }"});
  ASSERT_EQ(train.exit_code, 0) << train.out;
  absl::StatusOr<Bundle> bundle = ReadBundle(bundles + "/latest");
  ASSERT_THAT(bundle, IsOk());
  ServerProcess server;
  ASSERT_EQ(server.Start(bundles + "/latest"), absl::OkStatus());
  const int catalogue = static_cast<int>(bundle->items.ids.size());
  const auto ids_of = [&](v1::RetrieveRequest request, bool include) {
    request.set_include_history_items(include);
    v1::RetrieveResponse response;
    const grpc::Status status = server.retrieval().Retrieve(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::set<std::string> ids;
    for (const v1::ScoredItem& item : response.items()) ids.insert(item.item_id());
    EXPECT_EQ(ids.size(), static_cast<size_t>(response.items_size()));
    return ids;
  };

  // A known user: what the default leaves out is their stored history...
  const std::string user = KnownUsers(*bundle, 1).at(0);
  const int field = bundle->user.encoder.HistoryField();
  ASSERT_GE(field, 0);
  const auto row = std::find(bundle->users.ids.begin(), bundle->users.ids.end(), user) - bundle->users.ids.begin();
  std::set<std::string> stored;
  for (const int32_t token : bundle->users.rows.Field(static_cast<int>(row), field)) {
    if (token > 0) stored.insert(std::string(bundle->user.encoder.FieldVocabulary(field).tokens()[token - 1]));
  }
  ASSERT_FALSE(stored.empty());
  const std::set<std::string> everything = ids_of(KnownUserRequest(user, catalogue), true);
  EXPECT_EQ(everything.size(), static_cast<size_t>(catalogue));
  const std::set<std::string> unseen = ids_of(KnownUserRequest(user, catalogue), false);
  std::set<std::string> left_out;
  std::set_difference(everything.begin(), everything.end(), unseen.begin(), unseen.end(),
                      std::inserter(left_out, left_out.begin()));
  // ... and every item they interacted with in training (the bundle's seen sets), of which
  // the stored history is the end.
  const std::set<std::string> seen = SeenItemsOf(*bundle, user);
  EXPECT_TRUE(std::includes(seen.begin(), seen.end(), stored.begin(), stored.end()));
  std::set<std::string> expected = stored;
  expected.insert(seen.begin(), seen.end());
  EXPECT_EQ(left_out, expected);
  // k is still promised.
  const std::set<std::string> top = ids_of(KnownUserRequest(user, 10), false);
  EXPECT_EQ(top.size(), 10u);
  for (const std::string& id : stored) EXPECT_FALSE(top.contains(id)) << id;

  // A history passed in the request (a new user's clicks), with one id the model never saw.
  v1::RetrieveRequest fresh = KnownUserRequest("someone-new", catalogue);
  v1::FeatureValue& history = (*fresh.mutable_user_features())["history"];
  const std::vector<std::string> clicked = {bundle->items.ids[3], bundle->items.ids[7], "not-an-item"};
  for (const std::string& id : clicked) history.mutable_multi_hot()->add_values(id);
  const std::set<std::string> without = ids_of(fresh, false);
  EXPECT_EQ(without.size(), static_cast<size_t>(catalogue - 2));
  EXPECT_FALSE(without.contains(clicked[0]));
  EXPECT_FALSE(without.contains(clicked[1]));
  const std::set<std::string> with = ids_of(fresh, true);
  EXPECT_TRUE(with.contains(clicked[0]) && with.contains(clicked[1]));
  // The clients pass the option too, the history as a feature or with --history.
  for (const std::string& history : {"--feature=history=multi:" + clicked[0] + "|" + clicked[1],
                                     "--history=" + clicked[0] + "," + clicked[1]}) {
    for (const bool include : {false, true}) {
      std::vector<std::string> args = {BinaryDir() + "/twotower_client", "retrieve", "--address=" + server.address(),
                                       "--user=someone-new", absl::StrCat("--k=", catalogue), history};
      if (include) args.push_back("--include_history_items");
      const RunResult cli = RunCommand(args);
      EXPECT_EQ(cli.exit_code, 0) << history << ": " << cli.out;
      EXPECT_EQ(cli.out.find(clicked[0] + " ") != std::string::npos, include) << history << ": " << cli.out;
      EXPECT_EQ(cli.out.find(clicked[1] + " ") != std::string::npos, include) << history << ": " << cli.out;
    }
  }
  EXPECT_EQ(RunCommand({BinaryDir() + "/twotower_client", "retrieve", "--address=" + server.address(),
                        "--history=" + clicked[0], "--feature=history=multi:" + clicked[1]}).exit_code, 2);
  // Explicit exclusions still apply beside the history.
  fresh.add_exclude_item_ids(bundle->items.ids[9]);
  EXPECT_EQ(ids_of(fresh, false).size(), static_cast<size_t>(catalogue - 3));
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

// GET `path` from 127.0.0.1:`port` over plain HTTP/1.0; the whole answer ("" on failure).
std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = ::read(fd, buffer, sizeof buffer)) > 0) answer.append(buffer, n);
    }
  }
  ::close(fd);
  return answer;
}

TEST_F(E2eServerTest, MetricsAreServedInPrometheusTextFormat) {
  const int port = ::twotower::testing::FreePort();
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {absl::StrCat("--metrics_address=127.0.0.1:", port)}), absl::OkStatus());
  const std::string user = KnownUsers(*latest_, 1).at(0);
  for (int i = 0; i < 3; ++i) {
    v1::RetrieveResponse response;
    ASSERT_TRUE(server.retrieval().Retrieve(Context().get(), KnownUserRequest(user, 5), &response).ok());
  }
  v1::RetrieveResponse refused;
  EXPECT_EQ(server.retrieval().Retrieve(Context().get(), KnownUserRequest(user, 0), &refused).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::BatchRetrieveRequest batch;
  *batch.add_requests() = KnownUserRequest(user, 5);
  *batch.add_requests() = KnownUserRequest(user, 7);
  v1::BatchRetrieveResponse batched;
  ASSERT_TRUE(server.retrieval().BatchRetrieve(Context().get(), batch, &batched).ok());

  // Paths the exposer does not serve get its error page (civetweb's worker threads answer
  // them on the stack server/thread_stack.cc sizes; ASan builds overflowed 100 KiB).
  EXPECT_NE(HttpGet(port, "/nope").find("404"), std::string::npos);
  const std::string metrics = HttpGet(port, "/metrics");
  ASSERT_NE(metrics.find("200 OK"), std::string::npos) << metrics;
  for (const std::string& line : {
           std::string("twotower_retrieval_calls_total{code=\"OK\",method=\"Retrieve\"} 3\n"),
           std::string("twotower_retrieval_calls_total{code=\"INVALID_ARGUMENT\",method=\"Retrieve\"} 1\n"),
           std::string("twotower_retrieval_calls_total{code=\"OK\",method=\"BatchRetrieve\"} 1\n"),
           std::string("twotower_retrieval_call_seconds_count{method=\"Retrieve\"} 3\n"),
           std::string("twotower_retrieval_call_users_sum{method=\"BatchRetrieve\"} 2\n"),
           std::string("twotower_user_tower_seconds_count 4\n"),
           std::string("twotower_search_seconds_count 4\n"),
           absl::StrCat("twotower_model_info{index=\"Flat\",model_version=\"", latest_->model_version(), "\"} 1\n"),
           absl::StrCat("twotower_items ", latest_->items.ids.size(), "\n"),
           std::string("twotower_listener_accepting 1\n"),
       }) {
    EXPECT_NE(metrics.find(line), std::string::npos) << "missing: " << line << "in:\n" << metrics;
  }
  EXPECT_NE(metrics.find("# TYPE twotower_retrieval_call_seconds histogram"), std::string::npos);
  EXPECT_NE(metrics.find("\ntwotower_resident_memory_bytes "), std::string::npos);
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);

  // A metrics address that cannot be bound (the port is taken) stops the start.
  const RunResult taken = RunCommand({BinaryDir() + "/twotower_server", "--bundle=" + latest_path_,
                                      "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0",
                                      "--metrics_address=" + server_.address()});
  EXPECT_EQ(taken.exit_code, 1);
}

TEST_F(E2eServerTest, SigtermDrainsAndExitsZeroWithinFiveSeconds) {
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5), &response).ok());
  const auto start = std::chrono::steady_clock::now();
  const int status = server_.Stop(SIGTERM, std::chrono::seconds(5));
  ASSERT_NE(status, -1) << "still running 5 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(E2eServerTest, ServerRefusesToStartWithoutAValidBundle) {
  const RunResult missing = RunCommand({BinaryDir() + "/twotower_server",
                                 "--bundle=" + dir_->Join("no-such-bundle"),
                                 "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.out, "");  // no ready line
}

// Flags that cannot work are usage errors (exit 2), not silently ignored.
TEST_F(E2eServerTest, ServerRefusesFlagsThatCannotWork) {
  const auto start = [&](const std::string& flag) {
    return RunCommand({BinaryDir() + "/twotower_server", "--bundle=" + latest_path_,
                       "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0", flag})
        .exit_code;
  };
  EXPECT_EQ(start("--max_request_bytes=0"), 2);
  EXPECT_EQ(start("--search_batch=0"), 2);
  EXPECT_EQ(start("--max_in_flight=-1"), 2);
  EXPECT_EQ(start("--search_hand_off_ms=nan"), 2);
  EXPECT_EQ(start("--search_hand_off_ms=-1"), 2);
  EXPECT_EQ(start("--tls_client_ca=" + dir_->Join("ca.pem")), 2);  // without --tls_cert
}

TEST_F(E2eServerTest, CommandLineClientAgreesWithTheStub) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
  ASSERT_GT(response.items_size(), 0);

  const std::string client = BinaryDir() + "/twotower_client";
  const RunResult cli = RunCommand({client, "retrieve", "--address=" + server_.address(),
                             "--user=" + user, "--k=5"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_NE(cli.out.find(latest_->model_version()), std::string::npos) << cli.out;
  EXPECT_EQ(TopItemOfListing(cli.out), response.items(0).item_id()) << cli.out;

  // Features with every type prefix, as the CLI documents them.
  v1::RetrieveResponse cold;
  ASSERT_TRUE(Retrieve(ColdUserRequest("cli-cold", 5), &cold).ok());
  const RunResult cli_cold =
      RunCommand({client, "retrieve", "--address=" + server_.address(), "--user=cli-cold", "--k=5",
           "--feature=segment=s1", "--feature", "age=num:31", "--feature=region=cat:r2",
           "--feature=interests=multi:g0|g3"});
  ASSERT_EQ(cli_cold.exit_code, 0) << cli_cold.out;
  EXPECT_EQ(TopItemOfListing(cli_cold.out), cold.items(0).item_id()) << cli_cold.out;

  const RunResult status = RunCommand({client, "status", "--admin_address=" + server_.admin_address()});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_NE(status.out.find(latest_->model_version()), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("index searches:"), std::string::npos) << status.out;

  EXPECT_EQ(RunCommand({client, "retrieve", "--address=" + server_.address(), "--user=" + user,
                 "--k=0"}).exit_code, 1);
  EXPECT_EQ(RunCommand({client, "no-such-command"}).exit_code, 2);
  // A numeric feature that is not a finite number is a usage error before any call.
  EXPECT_EQ(RunCommand({client, "retrieve", "--address=" + server_.address(), "--user=someone-new",
                        "--feature=age=num:nan"}).exit_code, 2);
  // An unreadable CA file is a usage error, not a silent fall back to the system roots.
  const RunResult bad_ca = RunCommand({client, "retrieve", "--address=" + server_.address(), "--user=" + user,
                                       "--tls_ca=" + dir_->Join("no-such-ca.pem")});
  EXPECT_EQ(bad_ca.exit_code, 2);  // 1 would be a failed call: it must not get that far
}

// --filter (repeatable, FEATURE=V1|V2) reaches the request; --json prints the
// RetrieveResponse as proto3 JSON with the proto's field names.
TEST_F(E2eServerTest, CommandLineClientFiltersAndPrintsJson) {
  const std::string client = BinaryDir() + "/twotower_client";
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const int catalogue = static_cast<int>(latest_->items.ids.size());
  v1::RetrieveRequest request = KnownUserRequest(user, catalogue);
  v1::ItemFilter* brand = request.add_filters();
  brand->set_feature("brand");
  brand->add_any_of("b1");
  brand->add_any_of("b2");
  v1::ItemFilter* genres = request.add_filters();
  genres->set_feature("genres");
  genres->add_any_of("g1");
  v1::RetrieveResponse expected;
  ASSERT_TRUE(Retrieve(request, &expected).ok());
  ASSERT_GT(expected.items_size(), 0);
  ASSERT_LT(expected.items_size(), catalogue / 4);  // the filters do filter

  const RunResult cli = RunCommand({client, "retrieve", "--address=" + server_.address(), "--user=" + user,
                                    absl::StrCat("--k=", catalogue), "--filter=brand=b1|b2", "--filter",
                                    "genres=g1", "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_NE(cli.out.find("\"user_known\":true"), std::string::npos) << cli.out;
  v1::RetrieveResponse printed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(cli.out, &printed).ok()) << cli.out;
  EXPECT_EQ(printed.model_version(), expected.model_version());
  ASSERT_EQ(printed.items_size(), expected.items_size()) << cli.out;
  for (int i = 0; i < printed.items_size(); ++i) {
    EXPECT_EQ(printed.items(i).item_id(), expected.items(i).item_id()) << "rank " << i + 1;
    EXPECT_NEAR(printed.items(i).score(), expected.items(i).score(), 1e-6) << "rank " << i + 1;
  }

  const std::vector<std::vector<std::string>> usage_errors = {
      {"--filter=brand="}, {"--filter==b1"}, {"--filter=brand"}, {"--filter=brand=b1", "--filter=brand=b2"},
      {"--filter"}};
  for (const std::vector<std::string>& flags : usage_errors) {
    std::vector<std::string> args = {client, "retrieve", "--address=" + server_.address(), "--user=" + user};
    args.insert(args.end(), flags.begin(), flags.end());
    EXPECT_EQ(RunCommand(args).exit_code, 2) << flags.front();
  }
  EXPECT_EQ(RunCommand({client, "status", "--admin_address=" + server_.admin_address(), "--json"}).exit_code, 2);
}

// examples/retrieve.cc, the README's C++ example, answers what the stub answers.
TEST_F(E2eServerTest, TheCppExampleRetrievesWhatTheStubDoes) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
  std::string expected = absl::StrCat("model ", response.model_version(), "\n");
  for (const v1::ScoredItem& item : response.items()) {
    absl::StrAppend(&expected, item.item_id(), " ", absl::StrFormat("%.4f", item.score()), "\n");
  }
  const RunResult run = RunCommand({BinaryDir() + "/twotower_example_retrieve", server_.address(), user, "5"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_EQ(run.out, expected);
  const RunResult refused = RunCommand({BinaryDir() + "/twotower_example_retrieve", server_.address(), user, "0"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out;  // k = 0: INVALID_ARGUMENT, on stderr
  EXPECT_EQ(refused.out, "");
}

TEST_F(E2eServerTest, PythonClientAgreesWithTheStub) {
  // python3-grpcio and python3-protobuf are declared dependencies (scripts/install-deps.sh):
  // their absence is a failure, not a skip.
  const RunResult probe = RunCommand({Python(), "-c", "import grpc, google.protobuf; print('ok')"});
  ASSERT_EQ(probe.out, "ok\n") << Python()
                               << " cannot import grpc / google.protobuf: install "
                                  "python3-grpcio python3-protobuf";

  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &response).ok());
  ASSERT_GT(response.items_size(), 0);

  const RunResult python = RunCommand(PythonClient({"--address", server_.address(), "--user", user, "--k", "5"}));
  ASSERT_EQ(python.exit_code, 0) << python.out;
  EXPECT_NE(python.out.find(latest_->model_version()), std::string::npos) << python.out;
  EXPECT_EQ(TopItemOfListing(python.out), response.items(0).item_id()) << python.out;

  v1::RetrieveResponse cold;
  ASSERT_TRUE(Retrieve(ColdUserRequest("py-cold", 5), &cold).ok());
  const RunResult python_cold =
      RunCommand(PythonClient({"--address", server_.address(), "--user", "py-cold", "--k", "5", "--feature",
                               "segment=s1", "--feature", "age=num:31", "--feature", "region=r2",
                               "--feature", "interests=multi:g0|g3"}));
  ASSERT_EQ(python_cold.exit_code, 0) << python_cold.out;
  EXPECT_EQ(TopItemOfListing(python_cold.out), cold.items(0).item_id()) << python_cold.out;

  const RunResult bad = RunCommand(PythonClient({"--address", server_.address(), "--user", user, "--k", "0"}));
  EXPECT_EQ(bad.exit_code, 1);
}

// client/service_config.json (round_robin, health checking of twotower.v1.Retrieval, retry
// on UNAVAILABLE) is accepted by gRPC and serves through a dns:/// target from a C++
// channel and both clients; a file that is not a service config is a usage error (exit 2)
// before any call.
TEST_F(E2eServerTest, ShippedServiceConfigServesAndBadOnesAreRefused) {
  const std::string config = SourceDir() + "/client/service_config.json";
  const absl::StatusOr<std::string> json = twotower::ReadFile(config);
  ASSERT_THAT(json, IsOk());
  const std::string target = "dns:///" + server_.address();
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse expected;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &expected).ok());
  ASSERT_GT(expected.items_size(), 0);

  {
    grpc::ChannelArguments arguments;
    arguments.SetServiceConfigJSON(*json);
    const std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
    ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_IDLE) << "gRPC refused " << config;
    v1::RetrieveResponse response;
    const grpc::Status status =
        v1::Retrieval::NewStub(channel)->Retrieve(Context().get(), KnownUserRequest(user, 5), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.items(0).item_id(), expected.items(0).item_id());
  }

  const std::string client = BinaryDir() + "/twotower_client";
  const RunResult cli = RunCommand({client, "retrieve", "--address=" + target,
                                    "--service_config=" + config, "--user=" + user, "--k=5"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_EQ(TopItemOfListing(cli.out), expected.items(0).item_id()) << cli.out;
  const RunResult python =
      RunCommand(PythonClient({"--address", target, "--service_config", config, "--user", user, "--k", "5"}));
  ASSERT_EQ(python.exit_code, 0) << python.out;
  EXPECT_EQ(TopItemOfListing(python.out), expected.items(0).item_id()) << python.out;

  // The health checking is in force: checking a service the server does not serve leaves
  // no usable replica, so the call fails (after its retries) instead of being served.
  const std::string unknown_service = dir_->Join("unknown-service.json");
  WriteText(unknown_service, absl::StrReplaceAll(*json, {{"twotower.v1.Retrieval\"}", "no.such.Service\"}"}}));
  ASSERT_NE(ReadFile(unknown_service).value(), *json);
  EXPECT_EQ(RunCommand({client, "retrieve", "--address=" + target, "--timeout_ms=2000",
                        "--service_config=" + unknown_service, "--user=" + user}).exit_code, 1);

  // Not JSON, JSON that is not a service config, no file, an empty file: exit 2.
  const std::string not_json = dir_->Join("not-json.json");
  WriteText(not_json, "{\"loadBalancingConfig\": [");
  const std::string unknown_policy = dir_->Join("unknown-policy.json");
  WriteText(unknown_policy, "{\"loadBalancingConfig\": [{\"no_such_policy\": {}}]}");
  const std::string bad_retry = dir_->Join("bad-retry.json");
  WriteText(bad_retry, "{\"methodConfig\": [{\"name\": [{\"service\": \"twotower.v1.Retrieval\"}], "
                       "\"retryPolicy\": {\"maxAttempts\": 1}}]}");
  const std::string empty = dir_->Join("empty.json");
  WriteText(empty, "\n");
  // stderr too: the error must name the file.
  const auto with_stderr = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"/bin/sh", "-c", "exec \"$@\" 2>&1", "sh"});
    return RunCommand(args);
  };
  for (const std::string& bad : {not_json, unknown_policy, bad_retry, empty, dir_->Join("no-such.json")}) {
    const RunResult cli_bad = with_stderr({client, "retrieve", "--address=" + target,
                                           "--service_config=" + bad, "--user=" + user});
    EXPECT_EQ(cli_bad.exit_code, 2) << bad << ": " << cli_bad.out;
    EXPECT_NE(cli_bad.out.find("--service_config " + bad), std::string::npos) << cli_bad.out;
    const RunResult python_bad =
        with_stderr(PythonClient({"--address", target, "--service_config", bad, "--user", user}));
    EXPECT_EQ(python_bad.exit_code, 2) << bad << ": " << python_bad.out;
    EXPECT_NE(python_bad.out.find("--service_config " + bad), std::string::npos) << python_bad.out;
  }
  // It configures the Retrieval channel only.
  EXPECT_EQ(RunCommand({client, "status", "--admin_address=" + server_.admin_address(),
                        "--service_config=" + config}).exit_code, 2);
}

// --- Hostile clients and operator mistakes ------------------------------------------------

namespace hostile {

// The port of a host:port address.
int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

using testing::CallRaw;
using testing::Health;

// Waits up to `seconds` for `condition`.
bool WaitFor(const std::function<bool()>& condition, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

v1::GetStatusResponse StatusOf(ServerProcess& server) {
  v1::GetStatusResponse status;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EXPECT_TRUE(server.admin().GetStatus(&context, {}, &status).ok());
  return status;
}

// Listening TCP sockets of process `pid` (by the inodes of its descriptors).
int ListeningSockets(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error)) {
    const std::string target = ReadLink(entry.path().string());
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  int listening = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      const std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (fields.size() > 9 && fields[3] == "0A" && inodes.count(fields[9]) > 0) ++listening;
    }
  }
  return listening;
}

}  // namespace hostile

TEST_F(E2eServerTest, UndecodableRequestsAreInvalidArgumentAndCounted) {
  const int64_t failed_before = Status().requests_failed();
  const grpc::Status garbage =
      hostile::CallRaw(server_.address(), "/twotower.v1.Retrieval/Retrieve", "\xff\xff\xff");
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << garbage.error_message();
  EXPECT_NE(garbage.error_message().find("not a valid RetrieveRequest"), std::string::npos);
  // user_id (field 2) holding one byte that is not UTF-8.
  const grpc::Status latin1 = hostile::CallRaw(
      server_.address(), "/twotower.v1.Retrieval/BatchRetrieve", std::string("\x0a\x03\x12\x01\xe9", 5));
  EXPECT_EQ(latin1.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << latin1.error_message();
  EXPECT_EQ(Status().requests_failed(), failed_before + 2);
}

TEST_F(E2eServerTest, CompressedRequestsAreRefusedBeforeInflating) {
  const double rss_before = server_.ResidentMb();
  // 64 MB of one byte: ~64 KB on the wire with gzip, far over --max_request_bytes inflated.
  v1::RetrieveRequest bomb = KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5);
  bomb.set_user_id(std::string(64 << 20, 'a'));
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    v1::RetrieveResponse response;
    const grpc::Status status = server_.retrieval().Retrieve(&context, bomb, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();
  }
  EXPECT_LT(server_.ResidentMb() - rss_before, 32.0) << "the server inflated the requests";
  v1::RetrieveResponse response;  // and it still serves
  EXPECT_TRUE(Retrieve(KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5), &response).ok());
}

TEST_F(E2eServerTest, EachListenerBindsOneSocket) {
  // With SO_REUSEPORT, gRPC bound one more socket per poller, and for port 0 each on its
  // own free port: an unprinted port that served the Admin API.
  EXPECT_EQ(hostile::ListeningSockets(server_.pid()), 2);
}

TEST_F(E2eServerTest, AnswersAClientDoesNotReadStayCountedAndMemoryIsBounded) {
  ServerProcess server;
  ASSERT_EQ(server.Start(latest_path_, {"--max_response_bytes=" + std::to_string(32 << 20),
                                        "--max_in_flight=1000", "--max_concurrent_streams=100"}),
            absl::OkStatus());
  const double rss_before = server.ResidentMb();
  // BatchRetrieve of 1000 users x k = 1000: every answer is the whole catalogue per user.
  v1::BatchRetrieveRequest batch;
  for (const std::string& user : KnownUsers(*latest_, 1000)) {
    if (batch.requests_size() == 1000) break;
    *batch.add_requests() = KnownUserRequest(user, 1000);
  }
  while (batch.requests_size() < 1000) *batch.add_requests() = KnownUserRequest("u-none", 1000);
  const std::string message = batch.SerializeAsString();
  ASSERT_LT(message.size(), 16000u);
  std::vector<std::unique_ptr<testing::NonReadingHttp2Client>> clients;
  for (int c = 0; c < 2; ++c) {
    clients.push_back(std::make_unique<testing::NonReadingHttp2Client>(hostile::PortOf(server.address())));
    ASSERT_TRUE(clients.back()->ok());
    for (int i = 0; i < 60; ++i) {
      ASSERT_TRUE(clients.back()->Call("/twotower.v1.Retrieval/BatchRetrieve", message));
    }
  }
  // Every call is answered or refused; the answers nobody reads stay counted.
  ASSERT_TRUE(hostile::WaitFor(
      [&] {
        const v1::GetStatusResponse status = hostile::StatusOf(server);
        return status.requests_total() >= 120;
      },
      120));
  const v1::GetStatusResponse stuck = hostile::StatusOf(server);
  EXPECT_GT(stuck.response_bytes_in_flight(), 0);
  EXPECT_LE(stuck.response_bytes_in_flight(), 32 << 20);
  EXPECT_GT(stuck.requests_failed(), 0) << "the budget refused nothing";
  const double grown = server.ResidentMb() - rss_before;
#ifndef __SANITIZE_ADDRESS__  // ASan's quarantine keeps freed memory resident
  EXPECT_LT(grown, 200.0) << "unread answers held " << grown << " MB";
#endif
  std::printf("server RSS grew %.0f MB with %lld answer bytes unread\n", grown,
              static_cast<long long>(stuck.response_bytes_in_flight()));
  // Once the connections go, so do their answers; the server serves as before.
  clients.clear();
  EXPECT_TRUE(hostile::WaitFor(
      [&] {
        const v1::GetStatusResponse status = hostile::StatusOf(server);
        return status.calls_in_flight() == 0 && status.response_bytes_in_flight() == 0;
      },
      60));
  v1::RetrieveResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EXPECT_TRUE(server.retrieval()
                  .Retrieve(&context, KnownUserRequest(KnownUsers(*latest_, 1).at(0), 5), &response)
                  .ok());
}

TEST_F(E2eServerTest, DescriptorExhaustionIsSurvivedOrReportedNotServing) {
  // Opens `connections` connections that send the HTTP/2 preface; closed by the caller.
  const auto open = [](const std::string& address, int connections) {
    std::vector<int> fds;
    for (int i = 0; i < connections; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in to = {};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<uint16_t>(hostile::PortOf(address)));
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (fd < 0) break;
      fds.push_back(fd);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) break;
      static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      (void)::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL);
    }
    return fds;
  };
  const auto close_all = [](const std::vector<int>& fds) {
    for (int fd : fds) ::close(fd);
  };
  const std::string user = KnownUsers(*latest_, 1).at(0);
  const auto serves = [&](const std::string& address) {
    auto stub = testing::NewRetrievalStub(address, 12345);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    v1::RetrieveResponse response;
    return stub->Retrieve(&context, KnownUserRequest(user, 3), &response).ok();
  };
  {  // A low soft limit is raised to the hard one: 300 connections do not exhaust it.
    ServerProcess server;
    ASSERT_EQ(server.Start(latest_path_, {}, {"/bin/sh", "-c", "ulimit -S -n 256 && ulimit -H -n 4096 && exec \"$0\" \"$@\""}),
              absl::OkStatus());
    const std::vector<int> fds = open(server.address(), 300);
    // Served while the 300 are open, and after they close.
    EXPECT_TRUE(serves(server.address()));
    close_all(fds);
    EXPECT_TRUE(serves(server.address()));
    EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(10)), 0);
  }
  {  // A hard limit that runs out stops gRPC 1.51's listener for good: health says so.
    ServerProcess server;
    ASSERT_EQ(server.Start(latest_path_, {"--listener_probe_ms=200"},
                           {"/bin/sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\""}),
              absl::OkStatus());
    EXPECT_EQ(hostile::Health(server.address(), ""), 1);
    // The admin connection is made now: once descriptors run out, no new one is accepted.
    EXPECT_TRUE(hostile::StatusOf(server).retrieval_listener_accepting());
    const std::vector<int> fds = open(server.address(), 300);
    EXPECT_TRUE(hostile::WaitFor([&] { return !hostile::StatusOf(server).retrieval_listener_accepting(); }, 60))
        << "the probe never noticed the listener stopped";
    close_all(fds);
    // The admin port still answers; a client already connected reads NOT_SERVING.
    EXPECT_FALSE(serves(server.address()));
  }
}

TEST_F(E2eServerTest, ServerRefusesBoundlessFlagsAndBadTlsFiles) {
  const auto start = [&](const std::vector<std::string>& flags) {
    std::vector<std::string> args = {BinaryDir() + "/twotower_server", "--bundle=" + latest_path_,
                                     "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0"};
    args.insert(args.end(), flags.begin(), flags.end());
    return RunCommand(args).exit_code;
  };
  EXPECT_EQ(start({"--search_rounds=100000"}), 2);
  EXPECT_EQ(start({"--max_k=2000000000"}), 2);
  EXPECT_EQ(start({"--max_batch=100000000"}), 2);
  for (const std::string& index : {std::string("IVF0,Flat"), std::string("HNSW0"), std::string("PQ0"),
                                   std::string("PQ4x64"), std::string(30000, 'I')}) {
    EXPECT_EQ(start({"--index=" + index}), 2) << index.substr(0, 20);
  }
  EXPECT_EQ(start({"--index=HNSW32,Flat", "--ef_search=2147483647"}), 2);
  ScopedTempDir dir;
  for (const char* name : {"a", "b"}) {
    ASSERT_EQ(RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                          "1", "-keyout", dir.Join(std::string(name) + "-key.pem"), "-out",
                          dir.Join(std::string(name) + "-cert.pem"), "-subj", "/CN=localhost"})
                  .exit_code,
              0);
  }
  testing::WriteText(dir.Join("empty.pem"), "");
  EXPECT_EQ(start({"--tls_cert=" + dir.Join("a-cert.pem"), "--tls_key=" + dir.Join("b-key.pem")}), 2);
  EXPECT_EQ(start({"--tls_cert=" + dir.Join("a-cert.pem"), "--tls_key=" + dir.Join("a-key.pem"),
                   "--tls_client_ca=" + dir.Join("empty.pem")}),
            2);
  EXPECT_EQ(start({"--tls_cert=" + dir.Join("a-key.pem"), "--tls_key=" + dir.Join("a-key.pem")}), 2);
}

TEST_F(E2eServerTest, IndexStringsThatWouldCrashFaissAreRefusedAndTheOldIndexServes) {
  const std::string user = KnownUsers(*latest_, 1).at(0);
  v1::RetrieveResponse before;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &before).ok());
  for (const std::string& factory :
       {std::string("IVF0,Flat"), std::string("HNSW0,Flat"), std::string("PQ0"), std::string("PQ4x64"),
        std::string(30000, 'I'), std::string("IVF100000,Flat")}) {
    v1::RebuildIndexRequest rebuild;
    rebuild.mutable_params()->set_factory(factory);
    v1::RebuildIndexResponse rebuilt;
    EXPECT_EQ(server_.admin().RebuildIndex(Context().get(), rebuild, &rebuilt).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << factory.substr(0, 20);
  }
  {
    v1::RebuildIndexRequest rebuild;
    rebuild.mutable_params()->set_factory("HNSW32,Flat");
    rebuild.mutable_params()->set_ef_search(2147483647);
    v1::RebuildIndexResponse rebuilt;
    EXPECT_EQ(server_.admin().RebuildIndex(Context().get(), rebuild, &rebuilt).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::RetrieveResponse after;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 5), &after).ok());
  ASSERT_EQ(after.items_size(), before.items_size());
  for (int i = 0; i < after.items_size(); ++i) EXPECT_EQ(after.items(i).item_id(), before.items(i).item_id());
  // IVF with its nprobe, then another factory without one: the old nprobe is not carried.
  for (const char* factory : {"IVF16,Flat", "IVF4,Flat"}) {
    v1::RebuildIndexRequest rebuild;
    rebuild.mutable_params()->set_factory(factory);
    if (std::string(factory) == "IVF16,Flat") rebuild.mutable_params()->set_nprobe(16);
    v1::RebuildIndexResponse rebuilt;
    const grpc::Status status = server_.admin().RebuildIndex(Context().get(), rebuild, &rebuilt);
    EXPECT_TRUE(status.ok()) << factory << ": " << status.error_message();
  }
  // k results when k items exist, from an IVF index of 4 lists probed once.
  v1::RetrieveResponse ivf;
  ASSERT_TRUE(Retrieve(KnownUserRequest(user, 150), &ivf).ok());
  EXPECT_EQ(ivf.items_size(), 150);
}

TEST_F(E2eServerTest, GetStatusTellsHowTheLastReloadEnded) {
  v1::ReloadModelRequest reload;
  reload.set_bundle_path(first_path_);
  v1::ReloadModelResponse reloaded;
  {  // A deadline too short to answer in: not swapped, and GetStatus says so.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1));
    const grpc::Status status = server_.admin().ReloadModel(&context, reload, &reloaded);
    EXPECT_FALSE(status.ok());
  }
  const auto outcome_settled = [&] {
    const v1::GetStatusResponse status = Status();
    return status.has_last_reload();
  };
  // The call may have been refused by the client before it reached the server.
  if (hostile::WaitFor(outcome_settled, 5)) {
    const v1::GetStatusResponse status = Status();
    EXPECT_FALSE(status.last_reload().swapped());
    EXPECT_EQ(status.model_version(), latest_->model_version()) << "swapped after DEADLINE_EXCEEDED";
  }
  ASSERT_TRUE(server_.admin().ReloadModel(Context().get(), reload, &reloaded).ok());
  const v1::GetStatusResponse status = Status();
  EXPECT_TRUE(status.last_reload().swapped());
  EXPECT_EQ(status.last_reload().model_version(), first_->model_version());
  EXPECT_EQ(status.model_version(), first_->model_version());
}

// The trainer binary alone (no server): what only its main() decides. A table id that is
// not UTF-8 fails the run with file:line:column (or is skipped with --skip_bad_rows) and
// never becomes a bundle the server cannot parse; an --export_dir that cannot be written is
// reported before the data is even read; running out of memory is an error and exit 1,
// not an abort.
TEST(TrainerBinaryTest, BadInputsAndUnusableOutputsFailEarlyAndCleanly) {
  ScopedTempDir dir;
  const std::string data = dir.Join("data");
  ASSERT_EQ(RunCommand({BinaryDir() + "/twotower_synth", "--out_dir=" + data, "--users=300",
                        "--items=200"}).exit_code, 0);
  const std::string train = BinaryDir() + "/twotower_train";
  const std::string config = SourceDir() + "/configs/synthetic.textproto";
  // stderr with stdout, to see the error lines.
  const auto run = [&](const std::string& command) {
    return RunCommand({"/bin/sh", "-c", command + " 2>&1"});
  };
  const std::string common = absl::StrCat(train, " --config=", config, " --data_dir=", data, " --epochs=1");

  // One Latin-1 byte in an item id of the interactions.
  std::string clicks = ReadFile(data + "/train.csv").value();
  const size_t at = clicks.find("item-", clicks.find('\n', clicks.find('\n') + 1));  // 2nd row
  ASSERT_NE(at, std::string::npos);
  clicks.replace(at, 4, "it\xE9m");
  testing::WriteText(data + "/train.csv", clicks);
  const RunResult bad_id = run(absl::StrCat(common, " --export_dir=", dir.Join("b1")));
  EXPECT_EQ(bad_id.exit_code, 1) << bad_id.out;
  EXPECT_NE(bad_id.out.find("train.csv:3: column item_id: not valid UTF-8 (byte 0xE9 at offset 2)"),
            std::string::npos) << bad_id.out;
  EXPECT_FALSE(std::filesystem::exists(dir.Join("b1/latest")));
  const RunResult skipped = run(absl::StrCat(common, " --skip_bad_rows --export_dir=", dir.Join("b2")));
  EXPECT_EQ(skipped.exit_code, 0) << skipped.out;
  absl::StatusOr<Bundle> bundle = ReadBundle(dir.Join("b2/latest"));
  EXPECT_THAT(bundle, IsOk());

  // --export_dir under a regular file: refused before the data is read.
  testing::WriteText(dir.Join("file"), "");
  const RunResult no_export = run(absl::StrCat(common, " --export_dir=", dir.Join("file/bundles")));
  EXPECT_EQ(no_export.exit_code, 1) << no_export.out;
  EXPECT_NE(no_export.out.find("--export_dir " + dir.Join("file/bundles")), std::string::npos) << no_export.out;
  EXPECT_EQ(no_export.out.find("data:"), std::string::npos) << "read the data first:\n" << no_export.out;
  // A `latest` that is a directory could not be replaced at the end either.
  std::filesystem::create_directories(dir.Join("b3/latest"));
  const RunResult latest_dir = run(absl::StrCat(common, " --export_dir=", dir.Join("b3")));
  EXPECT_EQ(latest_dir.exit_code, 1) << latest_dir.out;
  EXPECT_NE(latest_dir.out.find("is not a symlink"), std::string::npos) << latest_dir.out;

#if defined(__SANITIZE_ADDRESS__)
  std::printf("out-of-memory case not run: AddressSanitizer needs more address space than the limit\n");
#else
  // A config within every bound whose ~1.9 GB embedding table does not fit a 1.5 GB address
  // space: std::bad_alloc, caught at main's boundary.
  std::string big = ReadFile(config).value();
  const std::string brand = "embedding_dim: 4 }";
  ASSERT_NE(big.find(brand), std::string::npos);
  big.replace(big.find(brand), brand.size(), "embedding_dim: 7 hash_buckets: 67108863 }");
  testing::WriteText(dir.Join("big.textproto"), big);
  const RunResult oom = run(absl::StrCat("ulimit -v 1500000 && exec ", train, " --config=", dir.Join("big.textproto"),
                                         " --data_dir=", data, " --skip_bad_rows --epochs=1 --export_dir=",
                                         dir.Join("b4")));
  EXPECT_EQ(oom.exit_code, 1) << oom.out;  // -1: killed by a signal (abort)
  EXPECT_NE(oom.out.find("error: out of memory"), std::string::npos) << oom.out;
#endif
}

}  // namespace
}  // namespace twotower
