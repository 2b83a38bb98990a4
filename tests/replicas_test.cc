// End to end with several real server replicas on loopback, as a deployment runs them:
// behind client-side round_robin (with gRPC health checking, the client service config
// the project ships) and behind nginx (grpc_pass). Rolling restarts and rolling model
// rollouts under continuous load must fail no call; an item change acknowledged by one
// replica is served by all, and by a replica started afterwards. Also the server
// behaviours this rests on: the SIGTERM drain delay and the maximum connection age.
//
// Each rolling test prints one summary line (calls per replica, failed calls by status,
// model versions seen), so `replicas_test --gtest_filter='*Rolling*' --gtest_repeat=10`
// is the benchmark of docs/BENCHMARKS.md.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "bundle/bundle.h"
#include "features/vocabulary.h"
#include "gtest/gtest.h"
#include "server/item_log.h"
#include "tests/server_process.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"
#include "util/file.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using ::twotower::testing::BinaryDir;
using ::twotower::testing::FreePort;
using ::twotower::testing::Context;
using ::twotower::testing::RunCommand;
using ::twotower::testing::RunResult;
using ::twotower::testing::ScopedTempDir;
using ::twotower::testing::ServerProcess;
using ::twotower::testing::SourceDir;
using ::twotower::testing::Spawn;

constexpr char kRetrievalService[] = "twotower.v1.Retrieval";

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The health the CLI reports ("SERVING", "NOT_SERVING", ...), or "" when the call failed.
std::string Health(const std::string& address, const std::string& service) {
  const RunResult result = RunCommand({BinaryDir() + "/twotower_client", "health", "--address=" + address,
                                       "--service=" + service});
  return result.out.empty() ? std::string() : result.out.substr(0, result.out.find('\n'));
}

v1::GetStatusResponse Status(ServerProcess& server) {
  v1::GetStatusResponse status;
  const grpc::Status rpc = server.admin().GetStatus(Context().get(), {}, &status);
  EXPECT_TRUE(rpc.ok()) << rpc.error_message();
  return status;
}

// The client service config shipped with the clients.
std::string ClientServiceConfig() {
  absl::StatusOr<std::string> config = ReadFile(SourceDir() + "/client/service_config.json");
  EXPECT_THAT(config, IsOk());
  return config.ok() ? *config : std::string();
}

// A channel over `ports` with the shipped client config: round_robin over the replicas
// that report SERVING, retries of UNAVAILABLE.
std::shared_ptr<grpc::Channel> RoundRobinChannel(const std::vector<int>& ports) {
  std::vector<std::string> addresses;
  for (int port : ports) addresses.push_back(absl::StrCat("127.0.0.1:", port));
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(ClientServiceConfig());
  return grpc::CreateCustomChannel("ipv4:" + absl::StrJoin(addresses, ","), grpc::InsecureChannelCredentials(),
                                   args);
}

// Callers retrieving continuously until stopped; every answer is counted.
class Load {
 public:
  Load(std::shared_ptr<grpc::Channel> channel, std::vector<std::string> users, int callers) {
    for (int c = 0; c < callers; ++c) {
      callers_.emplace_back([this, channel, users, c] {
        std::unique_ptr<v1::Retrieval::Stub> stub = v1::Retrieval::NewStub(channel);
        for (size_t n = c; !stop_.load(); n += 7) {
          v1::RetrieveRequest request;
          request.set_user_id(users[n % users.size()]);
          request.set_k(10);
          v1::RetrieveResponse response;
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
          const grpc::Status status = stub->Retrieve(&context, request, &response);
          absl::MutexLock lock(&mu_);
          if (status.ok()) {
            ++ok_;
            versions_.insert(response.model_version());
            last_version_ = response.model_version();
          } else {
            ++failed_[status.error_code()];
            if (first_error_.empty()) first_error_ = status.error_message();
          }
        }
      });
    }
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    for (std::thread& caller : callers_) {
      if (caller.joinable()) caller.join();
    }
  }
  int64_t ok() const {
    absl::MutexLock lock(&mu_);
    return ok_;
  }
  // Waits until `more` further calls succeeded (the load is flowing).
  bool WaitForCalls(int64_t more) {
    const int64_t target = ok() + more;
    return WaitFor([&] { return ok() >= target; }, std::chrono::seconds(60));
  }
  int64_t failed() const {
    absl::MutexLock lock(&mu_);
    int64_t total = 0;
    for (const auto& [code, count] : failed_) total += count;
    return total;
  }
  std::set<std::string> versions() const {
    absl::MutexLock lock(&mu_);
    return versions_;
  }
  std::string last_version() const {
    absl::MutexLock lock(&mu_);
    return last_version_;
  }
  std::string Failures() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> parts;
    for (const auto& [code, count] : failed_) parts.push_back(absl::StrCat("code ", code, ": ", count));
    return parts.empty() ? "none" : absl::StrCat(absl::StrJoin(parts, ", "), " (first: ", first_error_, ")");
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> callers_;
  mutable absl::Mutex mu_;
  int64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int, int64_t> failed_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> versions_ ABSL_GUARDED_BY(mu_);
  std::string last_version_ ABSL_GUARDED_BY(mu_);
  std::string first_error_ ABSL_GUARDED_BY(mu_);
};

// nginx in front of the replicas (grpc_pass), in a directory of its own; stopped when
// destroyed. Where nginx is not installed, `available()` is false. nginx (open source)
// does not health-check its upstreams: as Kubernetes' endpoints do for a proxy, the
// test takes a replica out of the upstream list before stopping it (SetDown).
class Nginx {
 public:
  Nginx(const std::vector<int>& upstream_ports, const std::string& dir) : dir_(dir), upstreams_(upstream_ports) {
    for (const char* candidate : {"/usr/sbin/nginx", "/usr/bin/nginx"}) {
      if (::access(candidate, X_OK) == 0) binary_ = candidate;
    }
    if (binary_.empty()) return;
    port_ = FreePort();
    WriteConfig();
    pid_ = Spawn({binary_, "-p", dir_, "-c", dir_ + "/nginx.conf", "-e", dir_ + "/error.log"}, -1);
  }
  ~Nginx() {
    if (pid_ > 0) {
      ::kill(pid_, SIGQUIT);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool available() const { return !binary_.empty(); }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Marks the replica on `port` down (or up again) and reloads nginx; returns once the
  // workers of the old configuration (and their upstream connections) are gone.
  bool SetDown(int port, bool down) {
    if (down) {
      down_.insert(port);
    } else {
      down_.erase(port);
    }
    WriteConfig();
    const std::set<pid_t> old_workers = Workers();
    if (::kill(pid_, SIGHUP) != 0) return false;
    return WaitFor(
        [&] {
          const std::set<pid_t> now = Workers();
          if (now.empty()) return false;
          for (pid_t worker : now) {
            if (old_workers.contains(worker)) return false;
          }
          return true;
        },
        std::chrono::seconds(60));
  }

  std::string ErrorLog() const {
    // Without the refused connects of restarting replicas (each retried on another one).
    absl::StatusOr<std::string> log = ReadFile(dir_ + "/error.log");
    if (!log.ok()) return "";
    std::string kept;
    for (absl::string_view line : absl::StrSplit(*log, '\n')) {
      if (!line.empty() && !absl::StrContains(line, "(111: Connection refused)")) absl::StrAppend(&kept, line, "\n");
    }
    return kept.size() > 4000 ? "..." + kept.substr(kept.size() - 4000) : kept;
  }

 private:
  void WriteConfig() {
    std::string servers;
    // max_fails=0: a replica that refused a connection is not written off for
    // fail_timeout (with every replica restarted in turn that would leave "no live
    // upstreams"); `down` is how a replica is taken out.
    for (int port : upstreams_) {
      absl::StrAppend(&servers, "    server 127.0.0.1:", port, " max_fails=0", down_.contains(port) ? " down" : "",
                      ";\n");
    }
    // Calls that found a replica gone (connection refused or reset before an answer) go
    // to the next one; Retrieve is idempotent, so POSTs may be retried too.
    const std::string config = absl::StrCat(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid ", dir_, "/nginx.pid;\n",
        "error_log ", dir_, "/error.log warn;\n", "events { worker_connections 1024; }\n", "http {\n",
        "  access_log off;\n", "  client_body_temp_path ", dir_, "/body;\n", "  proxy_temp_path ", dir_,
        "/proxy;\n", "  fastcgi_temp_path ", dir_, "/fastcgi;\n", "  uwsgi_temp_path ", dir_, "/uwsgi;\n",
        "  scgi_temp_path ", dir_, "/scgi;\n", "  upstream replicas {\n", servers, "    keepalive 32;\n  }\n",
        "  server {\n    listen 127.0.0.1:", port_, " http2;\n    location / {\n",
        "      grpc_pass grpc://replicas;\n",
        "      grpc_next_upstream error timeout non_idempotent;\n      grpc_next_upstream_tries 3;\n",
        "      grpc_read_timeout 30s;\n    }\n  }\n}\n");
    testing::WriteText(dir_ + "/nginx.conf", config);
  }
  // The master's worker processes.
  std::set<pid_t> Workers() const {
    absl::StatusOr<std::string> children = ReadFile(absl::StrCat("/proc/", pid_, "/task/", pid_, "/children"));
    std::set<pid_t> workers;
    if (!children.ok()) return workers;
    for (absl::string_view word : absl::StrSplit(*children, ' ', absl::SkipEmpty())) {
      pid_t worker = 0;
      if (absl::SimpleAtoi(word, &worker)) workers.insert(worker);
    }
    return workers;
  }

  std::string dir_, binary_;
  std::vector<int> upstreams_;
  std::set<int> down_;
  int port_ = 0;
  pid_t pid_ = -1;
};

class ReplicasTest : public ::testing::Test {
 protected:
  // Data and two trained model versions, once per test process.
  static void SetUpTestSuite() {
    dir_ = std::make_unique<ScopedTempDir>();
    const std::string data = dir_->Join("data");
    const std::string bundles = dir_->Join("bundles");
    const RunResult synth = RunCommand(
        {BinaryDir() + "/twotower_synth", "--out_dir=" + data, "--users=300", "--items=200"});
    if (synth.exit_code != 0) {
      setup_error_ = "twotower_synth failed:\n" + synth.out;
      return;
    }
    for (int run = 0; run < 2; ++run) {
      const RunResult train = RunCommand({BinaryDir() + "/twotower_train",
                                          "--config=" + SourceDir() + "/configs/synthetic.textproto",
                                          "--data_dir=" + data, "--export_dir=" + bundles, "--epochs=1"});
      if (train.exit_code != 0) {
        setup_error_ = "twotower_train failed:\n" + train.out;
        return;
      }
      std::error_code error;
      bundle_[run] = bundles + "/" + std::filesystem::read_symlink(bundles + "/latest", error).string();
      absl::StatusOr<Bundle> bundle = ReadBundle(bundle_[run]);
      if (!bundle.ok()) {
        setup_error_ = bundle.status().ToString();
        return;
      }
      version_[run] = bundle->model_version();
      if (run == 0) {
        items_ = static_cast<int>(bundle->items.ids.size());
        for (const std::string& id : bundle->users.ids) {
          if (bundle->user.encoder.ids().Lookup(id) != Vocabulary::kOov) users_.push_back(id);
          if (users_.size() == 50) break;
        }
        item_ids_ = bundle->items.ids;
      }
    }
    if (version_[0] == version_[1]) setup_error_ = "two trainings gave one model version";
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override { ASSERT_TRUE(setup_error_.empty()) << setup_error_; }

  // Starts `server` on 127.0.0.1:`port` serving `bundle`, with `flags`.
  static absl::Status StartOn(ServerProcess& server, int port, const std::string& bundle,
                              std::vector<std::string> flags = {}) {
    flags.push_back(absl::StrCat("--address=127.0.0.1:", port));
    return server.Start(bundle, flags);
  }

  // A rolling restart of `replicas` (on `ports`) onto `bundle`: one at a time, SIGTERM,
  // wait for exit 0, start again on the same port, wait until it reports SERVING and the
  // load flowed through the set again. `out` / `in` (may be empty) take a replica out of
  // a proxy before its SIGTERM and put it back once it serves.
  static void RollingRestart(std::deque<ServerProcess>& replicas, const std::vector<int>& ports,
                             const std::string& bundle, Load& load,
                             const std::function<void(int port)>& out = nullptr,
                             const std::function<void(int port)>& in = nullptr) {
    for (size_t r = 0; r < replicas.size(); ++r) {
      if (out) out(ports[r]);
      const int status = replicas[r].Stop(SIGTERM, std::chrono::seconds(60));
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "replica " << r << ": " << status;
      ASSERT_EQ(StartOn(replicas[r], ports[r], bundle), absl::OkStatus());
      ASSERT_TRUE(WaitFor([&] { return Health(replicas[r].address(), kRetrievalService) == "SERVING"; },
                          std::chrono::seconds(30)));
      if (in) in(ports[r]);
      ASSERT_TRUE(load.WaitForCalls(50)) << "the load stopped flowing after replica " << r;
    }
  }

  static inline std::unique_ptr<ScopedTempDir> dir_;
  static inline std::string setup_error_;
  static inline std::string bundle_[2], version_[2];
  static inline std::vector<std::string> users_, item_ids_;
  static inline int items_ = 0;
};

// --- What a load balancer needs from one server ------------------------------------------

TEST_F(ReplicasTest, AfterSigtermTheServerReportsNotServingAndKeepsAnsweringForTheDrainDelay) {
  ServerProcess server;
  ASSERT_EQ(server.Start(bundle_[0], {"--drain_delay_ms=4000"}), absl::OkStatus());
  ASSERT_EQ(Health(server.address(), kRetrievalService), "SERVING");
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(server.pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor([&] { return Health(server.address(), "") == "NOT_SERVING"; }, std::chrono::seconds(10)));
  EXPECT_EQ(Health(server.address(), kRetrievalService), "NOT_SERVING");
  // Still answering: a caller that has not yet seen NOT_SERVING is served.
  v1::RetrieveRequest request;
  request.set_user_id(users_.at(0));
  request.set_k(5);
  v1::RetrieveResponse response;
  const grpc::Status status = server.retrieval().Retrieve(Context().get(), request, &response);
  const auto answered = std::chrono::steady_clock::now();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.items_size(), 5);
  // Then it stops by itself, exit 0, no sooner than the delay.
  const int exit_status = server.Stop(0, std::chrono::seconds(30));  // signal 0: just wait
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status;
  EXPECT_GE(std::chrono::steady_clock::now() - signalled, std::chrono::milliseconds(4000));
  EXPECT_LT(answered - signalled, std::chrono::milliseconds(4000)) << "answered after the drain (too slow a machine?)";
}

TEST_F(ReplicasTest, ASecondSignalCutsTheDrainDelayShort) {
  ServerProcess server;
  ASSERT_EQ(server.Start(bundle_[0], {"--drain_delay_ms=600000"}), absl::OkStatus());
  ASSERT_EQ(::kill(server.pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor([&] { return Health(server.address(), "") == "NOT_SERVING"; }, std::chrono::seconds(10)));
  const int exit_status = server.Stop(SIGTERM, std::chrono::seconds(30));
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status;
}

TEST_F(ReplicasTest, ConnectionsAreClosedAfterTheirMaximumAgeSoClientsReResolve) {
  ServerProcess server;
  ASSERT_EQ(server.Start(bundle_[0], {"--max_connection_age_ms=500", "--max_connection_age_grace_ms=200"}),
            absl::OkStatus());
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  // The server ends the connection (GOAWAY); the channel leaves READY without any call.
  EXPECT_TRUE(channel->WaitForStateChange(GRPC_CHANNEL_READY,
                                          std::chrono::system_clock::now() + std::chrono::seconds(20)));
  EXPECT_NE(channel->GetState(false), GRPC_CHANNEL_READY);
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

// --- Replicas that agree on items -------------------------------------------------------

TEST_F(ReplicasTest, AnItemChangeAcknowledgedByOneReplicaIsServedByAllAndByLaterOnes) {
  ScopedTempDir log;
  const std::vector<std::string> flags = {"--item_log_dir=" + log.path(), "--item_log_poll_ms=100"};
  std::deque<ServerProcess> replicas(3);
  for (ServerProcess& replica : replicas) ASSERT_EQ(replica.Start(bundle_[0], flags), absl::OkStatus());
  const auto every_replica_has = [&](std::deque<ServerProcess>& set, int64_t items, int64_t records) {
    return WaitFor(
        [&] {
          for (ServerProcess& replica : set) {
            const v1::GetStatusResponse status = Status(replica);
            if (status.item_count() != items || status.item_log_applied() != records) return false;
          }
          return true;
        },
        std::chrono::seconds(30));
  };

  v1::UpsertItemsRequest upsert;
  v1::Entity* fresh = upsert.add_items();
  fresh->set_id("brand-new-item");
  (*fresh->mutable_features())["brand"].set_categorical("b7");
  v1::UpsertItemsResponse upserted;
  ASSERT_TRUE(replicas[0].admin().UpsertItems(Context().get(), upsert, &upserted).ok());
  EXPECT_EQ(upserted.model_version(), version_[0]);
  ASSERT_TRUE(every_replica_has(replicas, items_ + 1, 1));
  v1::RemoveItemsRequest remove;
  remove.add_item_ids(item_ids_.at(0));
  v1::RemoveItemsResponse removed;
  ASSERT_TRUE(replicas[1].admin().RemoveItems(Context().get(), remove, &removed).ok());
  EXPECT_EQ(removed.removed(), 1);
  ASSERT_TRUE(every_replica_has(replicas, items_, 2));

  // Two replicas taking changes at once: each change lands once, all agree on all of them.
  constexpr int kEach = 10;
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kEach; ++i) {
        v1::UpsertItemsRequest one;
        one.add_items()->set_id(absl::StrCat("concurrent-", w, "-", i));
        v1::UpsertItemsResponse answer;
        const grpc::Status status = replicas[1 + w].admin().UpsertItems(Context().get(), one, &answer);
        EXPECT_TRUE(status.ok()) << status.error_message();
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  ASSERT_TRUE(every_replica_has(replicas, items_ + 2 * kEach, 2 + 2 * kEach));

  // A replica started later serves the same items, and every replica the same answer.
  replicas.emplace_back();
  ASSERT_EQ(replicas.back().Start(bundle_[0], flags), absl::OkStatus());
  ASSERT_TRUE(every_replica_has(replicas, items_ + 2 * kEach, 2 + 2 * kEach));
  v1::RetrieveRequest everything;
  everything.set_user_id(users_.at(0));
  everything.set_k(items_ + 2 * kEach);
  std::vector<std::string> answers;
  for (ServerProcess& replica : replicas) {
    v1::RetrieveResponse response;
    ASSERT_TRUE(replica.retrieval().Retrieve(Context().get(), everything, &response).ok());
    std::set<std::string> ids;
    for (const v1::ScoredItem& item : response.items()) ids.insert(item.item_id());
    EXPECT_TRUE(ids.contains("brand-new-item"));
    EXPECT_FALSE(ids.contains(item_ids_.at(0)));
    answers.push_back(absl::StrJoin(ids, ","));
  }
  for (const std::string& answer : answers) EXPECT_EQ(answer, answers[0]);
  for (ServerProcess& replica : replicas) EXPECT_EQ(replica.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

TEST_F(ReplicasTest, AReplicaThatCannotApplyTheLogIsNotReadyAndRefusesChanges) {
  ScopedTempDir log;
  ServerProcess server;
  ASSERT_EQ(server.Start(bundle_[0], {"--item_log_dir=" + log.path(), "--item_log_poll_ms=100"}),
            absl::OkStatus());
  ASSERT_EQ(Health(server.address(), kRetrievalService), "SERVING");
  // Record 1 planted by "another replica", damaged.
  testing::WriteText(log.Join(version_[0] + "/" + ItemLog::RecordName(1)), "not a record");
  ASSERT_TRUE(WaitFor([&] { return !Status(server).item_log_error().empty(); }, std::chrono::seconds(30)));
  EXPECT_NE(Status(server).item_log_error().find(ItemLog::RecordName(1)), std::string::npos);
  EXPECT_EQ(Health(server.address(), kRetrievalService), "NOT_SERVING");  // not ready
  EXPECT_EQ(Health(server.address(), ""), "SERVING");                     // but alive
  const RunResult status = RunCommand({BinaryDir() + "/twotower_client", "status", "--admin_address=" + server.admin_address()});
  EXPECT_NE(status.out.find("item log:        0 records applied; NOT ready: "), std::string::npos) << status.out;
  v1::UpsertItemsRequest upsert;
  upsert.add_items()->set_id("x");
  v1::UpsertItemsResponse ignored;
  EXPECT_EQ(server.admin().UpsertItems(Context().get(), upsert, &ignored).error_code(), grpc::StatusCode::DATA_LOSS);
  // A replica starting on that log refuses to start rather than serve other items.
  ServerProcess later;
  EXPECT_FALSE(later.Start(bundle_[0], {"--item_log_dir=" + log.path()}).ok());
  EXPECT_EQ(server.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

TEST_F(ReplicasTest, StateDirAndItemLogDirTogetherAreRefused) {
  ScopedTempDir state, log;
  const RunResult both = RunCommand({BinaryDir() + "/twotower_server", "--bundle=" + bundle_[0],
                                     "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0",
                                     "--state_dir=" + state.path(), "--item_log_dir=" + log.path()});
  EXPECT_EQ(both.exit_code, 2);
  const RunResult missing = RunCommand({BinaryDir() + "/twotower_server", "--bundle=" + bundle_[0],
                                        "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0",
                                        "--item_log_dir=" + log.Join("missing")});
  EXPECT_EQ(missing.exit_code, 1);
}

// --- A deployment of 3 replicas under load -------------------------------------------------

TEST_F(ReplicasTest, RoundRobinSpreadsEvenlyAndRollingRestartsAndRolloutsFailNoCall) {
  const std::vector<int> ports = {FreePort(), FreePort(), FreePort()};
  std::deque<ServerProcess> replicas(3);
  for (size_t r = 0; r < replicas.size(); ++r) ASSERT_EQ(StartOn(replicas[r], ports[r], bundle_[0]), absl::OkStatus());
  std::shared_ptr<grpc::Channel> channel = RoundRobinChannel(ports);

  // Spread: one channel, calls one after another, counted by each replica.
  std::vector<int64_t> before;
  for (ServerProcess& replica : replicas) before.push_back(Status(replica).requests_total());
  std::unique_ptr<v1::Retrieval::Stub> stub = v1::Retrieval::NewStub(channel);
  constexpr int kCalls = 300;
  for (int i = 0; i < kCalls; ++i) {
    v1::RetrieveRequest request;
    request.set_user_id(users_.at(i % users_.size()));
    request.set_k(10);
    v1::RetrieveResponse response;
    ASSERT_TRUE(stub->Retrieve(Context().get(), request, &response).ok());
  }
  std::vector<int64_t> spread;
  for (size_t r = 0; r < replicas.size(); ++r) spread.push_back(Status(replicas[r]).requests_total() - before[r]);
  for (int64_t calls : spread) EXPECT_GE(calls, kCalls / 6) << absl::StrJoin(spread, "/");

  Load load(channel, users_, 4);
  ASSERT_TRUE(load.WaitForCalls(100));
  RollingRestart(replicas, ports, bundle_[0], load);  // a plain rolling restart
  ASSERT_FALSE(HasFatalFailure());
  const int64_t after_restart = load.ok();
  RollingRestart(replicas, ports, bundle_[1], load);  // a rollout of a new model
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(load.WaitForCalls(50));
  load.Stop();
  std::printf("round_robin: spread %s of %d calls; restart + rollout: %lld calls ok (%lld during the restart), failed: %s; "
              "versions seen: %s\n",
              absl::StrJoin(spread, "/").c_str(), kCalls, static_cast<long long>(load.ok()),
              static_cast<long long>(after_restart), load.Failures().c_str(), absl::StrJoin(load.versions(), ", ").c_str());
  EXPECT_EQ(load.failed(), 0) << load.Failures();
  EXPECT_EQ(load.versions(), (std::set<std::string>{version_[0], version_[1]}));
  EXPECT_EQ(load.last_version(), version_[1]);
  for (ServerProcess& replica : replicas) EXPECT_EQ(replica.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

TEST_F(ReplicasTest, BehindNginxRollingRestartsAndRolloutsFailNoCall) {
  ScopedTempDir nginx_dir;
  const std::vector<int> ports = {FreePort(), FreePort(), FreePort()};
  Nginx nginx(ports, nginx_dir.path());
  if (!nginx.available()) GTEST_SKIP() << "NOTE: nginx is not installed (apt-get install nginx-light)";
  std::deque<ServerProcess> replicas(3);
  for (size_t r = 0; r < replicas.size(); ++r) ASSERT_EQ(StartOn(replicas[r], ports[r], bundle_[0]), absl::OkStatus());
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(nginx.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)))
      << nginx.ErrorLog();

  std::vector<int64_t> before;
  for (ServerProcess& replica : replicas) before.push_back(Status(replica).requests_total());
  Load load(channel, users_, 4);
  ASSERT_TRUE(load.WaitForCalls(300)) << nginx.ErrorLog();
  std::vector<int64_t> spread;
  for (size_t r = 0; r < replicas.size(); ++r) spread.push_back(Status(replicas[r]).requests_total() - before[r]);
  for (int64_t calls : spread) EXPECT_GE(calls, 30) << absl::StrJoin(spread, "/");
  const auto out = [&](int port) { ASSERT_TRUE(nginx.SetDown(port, true)); };
  const auto in = [&](int port) { ASSERT_TRUE(nginx.SetDown(port, false)); };
  RollingRestart(replicas, ports, bundle_[0], load, out, in);
  ASSERT_FALSE(HasFatalFailure());
  RollingRestart(replicas, ports, bundle_[1], load, out, in);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(load.WaitForCalls(50));
  load.Stop();
  std::printf("nginx: spread %s; restart + rollout: %lld calls ok, failed: %s; versions seen: %s\n",
              absl::StrJoin(spread, "/").c_str(), static_cast<long long>(load.ok()), load.Failures().c_str(),
              absl::StrJoin(load.versions(), ", ").c_str());
  EXPECT_EQ(load.failed(), 0) << load.Failures() << "\n" << nginx.ErrorLog();
  EXPECT_EQ(load.last_version(), version_[1]);
  EXPECT_TRUE(nginx.running());
  for (ServerProcess& replica : replicas) EXPECT_EQ(replica.Stop(SIGTERM, std::chrono::seconds(10)) >> 8, 0);
}

}  // namespace
}  // namespace twotower
