// twotower_server: serves a model bundle over gRPC.
//
//   twotower_server --bundle bundles/latest [--address 127.0.0.1:50051]
//                   [--admin_address 127.0.0.1:50052] [--index "HNSW32,Flat"]
//
// Two listeners: the Retrieval API (+ gRPC health checking and reflection) on --address,
// the Admin API on --admin_address, loopback by default so that reloading or re-indexing
// is not reachable from outside unless an operator decides so. A port of 0 picks a free
// port. When both listen, one line goes to stdout (tests and scripts wait for it):
//
//   serving model <version> on <host:port> (admin <host:port>)
//
// SIGTERM / SIGINT: health turns NOT_SERVING while the server keeps serving for
// --drain_delay_ms (load balancers and health-checking clients move away), then it stops
// accepting calls, in-flight calls get up to --shutdown_grace_ms to finish, exit 0. A
// second signal skips what is left of the drain delay. Logs are logfmt lines on stderr.
#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <prometheus/exposer.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "model/tower.h"
#include "util/admin_token.h"
#include "util/file.h"
#include "util/program_usage.h"
#include "util/tls_files.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/admin_service.h"
#include "server/listener_probe.h"
#include "server/retrieval_service.h"
#include "server/server_metrics.h"
#include "server/snapshot.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "Retrieval API listen address, host:port (port 0 = pick a free port)");
ABSL_FLAG(std::string, admin_address, "127.0.0.1:50052",
          "Admin API listen address; keep it on loopback unless operators must reach it "
          "from elsewhere (it can replace the model)");
ABSL_FLAG(std::string, bundle, "", "Model bundle directory to serve (required)");
ABSL_FLAG(std::string, index, "",
          "FAISS index_factory string for the item index (inner product), e.g. Flat, "
          "HNSW32,Flat, IVF256,Flat. Empty: the bundle's index (read from its index.faiss) "
          "if it carries one, else Flat. The bundle's factory is read from its file; any "
          "other is built in memory at every load (logged as a warning)");
ABSL_FLAG(int, ef_search, 0, "HNSW search depth (0 = FAISS default)");
ABSL_FLAG(bool, half_first_pass, true,
          "Flat index: scan an fp16 copy of the item vectors first, then the floats of the few "
          "rows that can be in the top k (the same answers; 2 bytes more per value)");
ABSL_FLAG(int, nprobe, 0, "IVF lists probed per query (0 = FAISS default)");
ABSL_FLAG(int, max_k, 1000, "Largest k a Retrieve request may ask for");
ABSL_FLAG(int, max_batch, 1024, "Most requests in one BatchRetrieve");
ABSL_FLAG(int, search_batch, 64,
          "Most queries that concurrent Retrieve calls combine into one index search "
          "(dynamic batching; 1 = off)");
ABSL_FLAG(int, search_rounds, 0,
          "Combined index searches that may run at once (0 = one per core)");
ABSL_FLAG(double, search_hand_off_ms,
          absl::ToDoubleMilliseconds(twotower::SearchBatcher::kHandOffAbove),
          "Under load, index searches whose rounds take longer than this on average run "
          "on background threads in batches, shorter ones on gRPC's threads (see "
          "server/search_batcher.h)");
ABSL_FLAG(int, max_exclude, 10000, "Most exclude_item_ids in one Retrieve request");
ABSL_FLAG(int, max_in_flight, 256,
          "Most Retrieval calls in progress at once (a call counts until its answer is sent "
          "or abandoned); calls beyond it fail at once with RESOURCE_EXHAUSTED (0 = no limit)");
ABSL_FLAG(int, max_filters, 64,
          "Most item filters in one call (summed over a BatchRetrieve's requests): each "
          "filtered request costs a pass over the catalogue");
ABSL_FLAG(int, max_filter_values, 4096,
          "Most any_of values over all the filters of one call");
ABSL_FLAG(int64_t, max_response_bytes, int64_t{256} << 20,
          "Memory budget for Retrieval calls and answers not yet fully sent: a call counts "
          "256 bytes per result it may return plus three times its request size, then its answer's "
          "size until gRPC is done with it; calls beyond it fail at once with "
          "RESOURCE_EXHAUSTED (one call is always admitted)");
ABSL_FLAG(int, max_concurrent_streams, 64,
          "Most concurrent calls on one client connection (HTTP/2 streams)");
ABSL_FLAG(int64_t, grpc_memory_bytes, int64_t{512} << 20,
          "gRPC's resource quota: memory its transports may use for buffers (requests and "
          "answers on the wire)");
ABSL_FLAG(int, listener_probe_ms, 2000,
          "How often a probe connects to the Retrieval listener; after 3 probes in a row "
          "get no answer (the listener stopped accepting, e.g. after running out of "
          "descriptors), health turns NOT_SERVING so an orchestrator restarts the server "
          "(0 = no probe)");
ABSL_FLAG(std::string, state_dir, "",
          "Directory (must exist) for the item journals: UpsertItems / RemoveItems are logged "
          "there and replayed when the same model is loaded again (empty = changes live until "
          "exit)");
ABSL_FLAG(std::string, item_log_dir, "",
          "Directory (must exist) shared by every replica of a deployment, e.g. on a "
          "ReadWriteMany volume: UpsertItems / RemoveItems acknowledged by any replica are "
          "logged there and applied by all of them, including replicas started later "
          "(empty = none; not together with --state_dir)");
ABSL_FLAG(int, item_log_poll_ms, 1000,
          "With --item_log_dir: how often a replica applies the changes other replicas logged");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port for Prometheus metrics over HTTP (GET /metrics); empty = none. Unauthenticated: "
          "keep it on loopback or a network only the scraper reaches");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the token admin calls must send as \"authorization: Bearer <token>\" "
          "(or set TWOTOWER_ADMIN_TOKEN); empty = no token (then keep --admin_address on loopback)");
ABSL_FLAG(std::string, bundle_root, "",
          "If set, ReloadModel only loads bundles under this directory (symlinks resolved)");
ABSL_FLAG(int, max_request_bytes, 4 << 20, "Largest request message the server accepts");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve Retrieval over TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: Retrieval clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(int, drain_delay_ms, 2000,
          "On SIGTERM/SIGINT, how long the server keeps serving with health NOT_SERVING "
          "before it stops accepting calls, so load balancers and clients stop sending first");
ABSL_FLAG(int64_t, max_connection_age_ms, 300000,
          "Retrieval connections are closed (GOAWAY) after about this age, so clients "
          "re-resolve DNS and find new replicas (0 = never)");
ABSL_FLAG(int64_t, max_connection_age_grace_ms, 10000,
          "After a connection's GOAWAY for age, how long its calls get to finish");
ABSL_FLAG(int, shutdown_grace_ms, 5000,
          "On SIGTERM/SIGINT, how long in-flight calls get to finish before they are "
          "cancelled");

namespace {

using twotower::LogEvent;

// PEM files: regular files of at most 1 MiB (a FIFO or /dev/zero is refused, not read).
const twotower::ReadFileOptions kPemFile = {.max_bytes = 1 << 20, .regular_only = true};

// How long gRPC gets to finish calls that arrived after the drain began (see below).
constexpr absl::Duration kShutdownSettle = absl::Milliseconds(250);

int stop_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int signal) {
  // Only async-signal-safe calls here: one write, errno preserved for the thread it
  // interrupted.
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(signal);
  if (::write(stop_pipe[1], &byte, 1) < 0) {
  }
  errno = saved_errno;
}

// host:port with the port replaced by the one actually bound (for ":0").
std::string WithPort(const std::string& address, int port) {
  const size_t colon = address.rfind(':');
  return absl::StrCat(colon == std::string::npos ? address : address.substr(0, colon), ":",
                      port);
}

struct Listener {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // as bound
};

// Starts a server with `service` on `address`; null server when it cannot listen.
// `quota` (may be null) bounds the memory of its transports.
// `max_age` (0: none) closes connections after that age, with `max_age_grace` for their calls.
Listener Start(const std::string& address, grpc::Service* service,
               std::shared_ptr<grpc::ServerCredentials> credentials,
               grpc::ResourceQuota* quota, int64_t max_age_ms = 0, int64_t max_age_grace_ms = 0) {
  grpc::ServerBuilder builder;
  if (max_age_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, static_cast<int>(max_age_ms));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, static_cast<int>(max_age_grace_ms));
  }
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_request_bytes));
  // One listening socket per address. With SO_REUSEPORT gRPC opens one per poller, and
  // for port 0 each of them bound its own free port: an unprinted extra port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             absl::GetFlag(FLAGS_max_concurrent_streams));
  // Compressed requests are refused (UNIMPLEMENTED, "compression algorithm disabled")
  // before they are inflated: gRPC 1.51 checks the request size limit on the compressed
  // bytes and would inflate a small request into any size.
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  if (quota != nullptr) builder.SetResourceQuota(*quota);
  int port = 0;
  builder.AddListeningPort(address, std::move(credentials), &port);
  builder.RegisterService(service);
  Listener listener;
  listener.server = builder.BuildAndStart();
  if (listener.server != nullptr && port == 0) {  // built, but the port did not bind
    listener.server->Shutdown();
    listener.server.reset();
  }
  listener.address = WithPort(address, port);
  return listener;
}

// gRPC health of the Retrieval listener. "" (liveness) is SERVING while the listener
// accepts connections; the Retrieval service (readiness) also needs the shared item log
// applied. After Stop both stay NOT_SERVING.
class ServingHealth {
 public:
  void Attach(grpc::HealthCheckServiceInterface* health) {
    absl::MutexLock lock(&mu_);
    health_ = health;
    UpdateLocked();
  }
  void SetAccepting(bool accepting) {
    absl::MutexLock lock(&mu_);
    accepting_ = accepting;
    UpdateLocked();
  }
  void SetItemLogApplied(bool applied) {
    absl::MutexLock lock(&mu_);
    item_log_applied_ = applied;
    UpdateLocked();
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    UpdateLocked();
  }
  bool accepting() const {
    absl::MutexLock lock(&mu_);
    return accepting_;
  }

 private:
  void UpdateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (health_ == nullptr) return;
    const bool alive = accepting_ && !stopping_;
    health_->SetServingStatus("", alive);
    health_->SetServingStatus(twotower::v1::Retrieval::service_full_name(), alive && item_log_applied_);
  }
  mutable absl::Mutex mu_;
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool item_log_applied_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// Gauges of the serving state, read when Prometheus scrapes (nothing to keep in sync).
class ScrapeTimeGauges : public prometheus::Collectable {
 public:
  explicit ScrapeTimeGauges(std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

  static prometheus::MetricFamily Gauge(std::string name, std::string help, double value,
                                        std::vector<prometheus::ClientMetric::Label> labels = {}) {
    prometheus::MetricFamily family{std::move(name), std::move(help), prometheus::MetricType::Gauge, {}};
    prometheus::ClientMetric metric;
    metric.label = std::move(labels);
    metric.gauge.value = value;
    family.metric.push_back(std::move(metric));
    return family;
  }

 private:
  const std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

// The process's resident memory in bytes (VmRSS), 0 if unreadable.
double ResidentBytes() {
  absl::StatusOr<std::string> status = twotower::ReadFile("/proc/self/status", {.max_bytes = 1 << 16});
  if (!status.ok()) return 0;
  const size_t at = status->find("VmRSS:");
  if (at == std::string::npos) return 0;
  return std::strtod(status->c_str() + at + 6, nullptr) * 1024;
}

// Raises the soft limit on open descriptors to the hard limit: each client connection
// holds one, and gRPC 1.51 stops accepting for good after an accept fails with EMFILE.
void RaiseDescriptorLimit() {
  struct rlimit limit = {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = before;
  }
  LogEvent("info", "descriptor limit",
           {{"soft", absl::StrCat(limit.rlim_cur)}, {"was", absl::StrCat(before)},
            {"hard", absl::StrCat(limit.rlim_max)}});
}

}  // namespace

int main(int argc, char** argv) {
  twotower::SetProgramUsage(
      "Serves a twotower model bundle over gRPC: twotower_server --bundle DIR "
      "[--address HOST:PORT] [--admin_address HOST:PORT] [--index FACTORY]");
  absl::ParseCommandLine(argc, argv);
  // Requests already run in parallel on gRPC's threads; BLAS threads would only contend.
  twotower::UseSingleThreadedBlas();
  // Model-sized blocks straight from / back to the OS: glibc would otherwise raise its
  // mmap threshold after the first free and keep freed models in its arenas, so memory
  // would ratchet up over reloads instead of returning to one model (two during a swap).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // Debian's Abseil keeps a lock-order graph for every absl::Mutex (gRPC's included) and
  // updates it on each acquisition (GraphCycles in a profile of the server under load);
  // a serving process does not need the deadlock detector.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  twotower::RateLimitLibraryLogs();
  const std::string bundle_path = absl::GetFlag(FLAGS_bundle);
  if (bundle_path.empty()) {
    std::fprintf(stderr, "error: --bundle is required\n");
    return 2;
  }
  // Every number is bounded: a typo must not become a huge allocation or thread count.
  const struct {
    const char* name;
    int64_t value, min, max;
  } bounded[] = {
      {"max_k", absl::GetFlag(FLAGS_max_k), 1, 100000},
      {"max_batch", absl::GetFlag(FLAGS_max_batch), 1, 65536},
      {"search_batch", absl::GetFlag(FLAGS_search_batch), 1, 4096},
      {"search_rounds", absl::GetFlag(FLAGS_search_rounds), 0, 256},
      {"max_exclude", absl::GetFlag(FLAGS_max_exclude), 0, 1000000},
      {"max_filters", absl::GetFlag(FLAGS_max_filters), 0, 255},
      {"max_filter_values", absl::GetFlag(FLAGS_max_filter_values), 0, 1000000},
      {"max_request_bytes", absl::GetFlag(FLAGS_max_request_bytes), 1, int64_t{1} << 30},
      {"max_response_bytes", absl::GetFlag(FLAGS_max_response_bytes), 1 << 20, int64_t{1} << 40},
      {"max_concurrent_streams", absl::GetFlag(FLAGS_max_concurrent_streams), 1, 100000},
      {"grpc_memory_bytes", absl::GetFlag(FLAGS_grpc_memory_bytes), 16 << 20, int64_t{1} << 40},
      {"ef_search", absl::GetFlag(FLAGS_ef_search), 0, 65536},
      {"nprobe", absl::GetFlag(FLAGS_nprobe), 0, 1 << 20},
      {"max_in_flight", absl::GetFlag(FLAGS_max_in_flight), 0, 1000000},
      {"shutdown_grace_ms", absl::GetFlag(FLAGS_shutdown_grace_ms), 0, 3600000},
      {"drain_delay_ms", absl::GetFlag(FLAGS_drain_delay_ms), 0, 3600000},
      // gRPC takes these as int milliseconds.
      {"max_connection_age_ms", absl::GetFlag(FLAGS_max_connection_age_ms), 0, 2147483647},
      {"max_connection_age_grace_ms", absl::GetFlag(FLAGS_max_connection_age_grace_ms), 0, 2147483647},
      {"listener_probe_ms", absl::GetFlag(FLAGS_listener_probe_ms), 0, 3600000},
      {"item_log_poll_ms", absl::GetFlag(FLAGS_item_log_poll_ms), 1, 3600000},
  };
  for (const auto& flag : bounded) {
    if (flag.value < flag.min || flag.value > flag.max) {
      std::fprintf(stderr, "error: --%s must be in %lld..%lld, got %lld\n", flag.name,
                   static_cast<long long>(flag.min), static_cast<long long>(flag.max),
                   static_cast<long long>(flag.value));
      return 2;
    }
  }
  if (!(absl::GetFlag(FLAGS_search_hand_off_ms) >= 0)) {  // NaN fails this too
    std::fprintf(stderr, "error: --search_hand_off_ms must be >= 0 (inf allowed)\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_state_dir).empty() && !absl::GetFlag(FLAGS_item_log_dir).empty()) {
    // Two records of the same changes could disagree; one place holds them.
    std::fprintf(stderr, "error: --state_dir and --item_log_dir cannot be used together\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_tls_client_ca).empty() && absl::GetFlag(FLAGS_tls_cert).empty()) {
    // Client certificates need TLS: serving plaintext instead would drop the check silently.
    std::fprintf(stderr, "error: --tls_client_ca needs --tls_cert and --tls_key\n");
    return 2;
  }

  // Stop signals become a byte on a pipe that an ordinary thread reads, so shutdown runs
  // as normal code. (sigwait with the signals blocked is not enough: OpenBLAS starts its
  // threads before main, with the signals unblocked, and the default action would kill
  // the process on one of them.) Installed before the load, so a signal during it is
  // not lost; the write end is non-blocking, so a flood of signals cannot block the
  // handler.
  if (::pipe2(stop_pipe, O_CLOEXEC) != 0 || ::fcntl(stop_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
    std::fprintf(stderr, "error: pipe: %s\n", std::strerror(errno));
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);

  twotower::IndexOptions index_options;
  index_options.factory = absl::GetFlag(FLAGS_index);
  index_options.ef_search = absl::GetFlag(FLAGS_ef_search);
  index_options.nprobe = absl::GetFlag(FLAGS_nprobe);
  index_options.half_first_pass = absl::GetFlag(FLAGS_half_first_pass);
  if (absl::Status s = twotower::ValidateIndexRequest(index_options); !s.ok()) {
    std::fprintf(stderr, "error: --index / --ef_search / --nprobe: %s\n",
                 std::string(s.message()).c_str());
    return 2;
  }
  LogEvent("info", "loading model",
           {{"bundle", bundle_path},
            {"index", index_options.factory.empty() ? "the bundle's (else Flat)" : index_options.factory}});
  absl::StatusOr<std::shared_ptr<const twotower::Snapshot>> snapshot =
      twotower::LoadSnapshot(bundle_path, index_options, absl::GetFlag(FLAGS_state_dir),
                            absl::GetFlag(FLAGS_item_log_dir));
  if (!snapshot.ok()) {
    std::fprintf(stderr, "error: cannot load bundle %s: %s\n", bundle_path.c_str(),
                 snapshot.status().ToString().c_str());
    return 1;
  }
  twotower::SnapshotHolder snapshots;
  snapshots.Swap(*snapshot);
  const std::string version = (*snapshot)->model_version;
  LogEvent((*snapshot)->catalogue->index_ignores_bundle() ? "warn" : "info", "model loaded",
           {{"version", version},
            {"items", absl::StrCat((*snapshot)->catalogue->size())},
            {"index", (*snapshot)->catalogue->index_note()},
            {"seen_item_bytes", absl::StrCat((*snapshot)->bundle->seen_items.MemoryBytes())},
            {"seconds", absl::StrCat(absl::ToDoubleSeconds((*snapshot)->load_duration))}});
  snapshot->reset();  // the holder owns it now; a reload must be able to free it

  twotower::ServerMetrics metrics;
  twotower::RetrievalOptions retrieval_options;
  retrieval_options.max_k = absl::GetFlag(FLAGS_max_k);
  retrieval_options.max_batch = absl::GetFlag(FLAGS_max_batch);
  retrieval_options.search_batch = absl::GetFlag(FLAGS_search_batch);
  retrieval_options.search_rounds = absl::GetFlag(FLAGS_search_rounds) > 0
                                        ? absl::GetFlag(FLAGS_search_rounds)
                                        : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  retrieval_options.max_exclude = absl::GetFlag(FLAGS_max_exclude);
  retrieval_options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  retrieval_options.max_filters = absl::GetFlag(FLAGS_max_filters);
  retrieval_options.max_filter_values = absl::GetFlag(FLAGS_max_filter_values);
  retrieval_options.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  retrieval_options.search_hand_off =
      absl::Milliseconds(absl::GetFlag(FLAGS_search_hand_off_ms));
  twotower::RetrievalService retrieval_service(&snapshots, &metrics, retrieval_options);
  twotower::AdminService::Options admin_options;
  admin_options.state_dir = absl::GetFlag(FLAGS_state_dir);
  admin_options.item_log_dir = absl::GetFlag(FLAGS_item_log_dir);
  admin_options.bundle_root = absl::GetFlag(FLAGS_bundle_root);
  admin_options.search_stats = [&retrieval_service] { return retrieval_service.search_stats(); };
  ServingHealth serving_health;
  admin_options.item_log_healthy = [&serving_health](bool ok) { serving_health.SetItemLogApplied(ok); };
  admin_options.serving_status = [&retrieval_service,
                                  &serving_health](twotower::v1::GetStatusResponse* status) {
    status->set_retrieval_listener_accepting(serving_health.accepting());
    status->set_calls_in_flight(retrieval_service.calls_in_flight());
    status->set_response_bytes_in_flight(retrieval_service.response_bytes_in_flight());
  };
  if (absl::StatusOr<std::string> token = twotower::ReadAdminToken(absl::GetFlag(FLAGS_admin_token_file));
      token.ok()) {
    admin_options.token = *std::move(token);
  } else {
    std::fprintf(stderr, "error: --admin_token_file: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  twotower::AdminService admin_service(&snapshots, &metrics, admin_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // TLS for the public port when a certificate is given.
  std::shared_ptr<grpc::ServerCredentials> retrieval_credentials = grpc::InsecureServerCredentials();
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    absl::StatusOr<std::string> cert = twotower::ReadFile(absl::GetFlag(FLAGS_tls_cert), kPemFile);
    absl::StatusOr<std::string> key = twotower::ReadFile(absl::GetFlag(FLAGS_tls_key), kPemFile);
    if (!cert.ok() || !key.ok()) {
      std::fprintf(stderr, "error: --tls_cert and --tls_key must both name readable PEM files\n");
      return 2;
    }
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({*key, *cert});
    std::optional<std::string> client_ca;
    if (const std::string ca_file = absl::GetFlag(FLAGS_tls_client_ca); !ca_file.empty()) {
      absl::StatusOr<std::string> ca = twotower::ReadFile(ca_file, kPemFile);
      if (!ca.ok()) {
        std::fprintf(stderr, "error: --tls_client_ca %s: %s\n", ca_file.c_str(),
                     std::string(ca.status().message()).c_str());
        return 2;
      }
      client_ca = *ca;
      tls.pem_root_certs = *std::move(ca);
      tls.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    if (absl::Status s = twotower::CheckTlsServerFiles(*cert, *key, client_ca ? &*client_ca : nullptr);
        !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    retrieval_credentials = grpc::SslServerCredentials(tls);
  }
  RaiseDescriptorLimit();
  grpc::ResourceQuota quota("twotower-retrieval");
  quota.Resize(static_cast<size_t>(absl::GetFlag(FLAGS_grpc_memory_bytes)));
  Listener retrieval =
      Start(absl::GetFlag(FLAGS_address), &retrieval_service, retrieval_credentials, &quota,
            absl::GetFlag(FLAGS_max_connection_age_ms), absl::GetFlag(FLAGS_max_connection_age_grace_ms));
  if (retrieval.server == nullptr) {
    std::fprintf(stderr, "error: cannot listen on %s\n", absl::GetFlag(FLAGS_address).c_str());
    return 1;
  }
  Listener admin = Start(absl::GetFlag(FLAGS_admin_address), &admin_service,
                         grpc::InsecureServerCredentials(), nullptr);
  if (admin.server == nullptr) {
    std::fprintf(stderr, "error: cannot listen on %s\n",
                 absl::GetFlag(FLAGS_admin_address).c_str());
    retrieval.server->Shutdown();
    return 1;
  }
  serving_health.Attach(retrieval.server->GetHealthCheckService());

  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<ScrapeTimeGauges> gauges;
  if (const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address); !metrics_address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_address, /*num_threads=*/1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: cannot serve metrics on --metrics_address %s: %s\n", metrics_address.c_str(),
                   e.what());
      retrieval.server->Shutdown();
      admin.server->Shutdown();
      return 1;
    }
    gauges = std::make_shared<ScrapeTimeGauges>([&snapshots, &retrieval_service, &serving_health] {
      using G = ScrapeTimeGauges;
      std::vector<prometheus::MetricFamily> families;
      if (const std::shared_ptr<const twotower::Snapshot> snapshot = snapshots.Get(); snapshot != nullptr) {
        families.push_back(G::Gauge("twotower_model_info", "The model served (value 1)", 1,
                                    {{"index", snapshot->catalogue->index_options().factory},
                                     {"model_version", snapshot->model_version}}));
        families.push_back(G::Gauge("twotower_items", "Items served (the bundle's plus upserted, less removed)",
                                    static_cast<double>(snapshot->catalogue->size())));
        families.push_back(G::Gauge("twotower_items_upserted", "Items upserted online since the model was loaded",
                                    static_cast<double>(snapshot->catalogue->upserted())));
        families.push_back(G::Gauge("twotower_item_log_applied", "Records of the shared item log applied",
                                    static_cast<double>(snapshot->item_log_applied)));
        families.push_back(G::Gauge("twotower_model_loaded_timestamp_seconds", "When the model was loaded",
                                    absl::ToDoubleSeconds(snapshot->loaded_at - absl::UnixEpoch())));
      }
      families.push_back(G::Gauge("twotower_calls_in_flight", "Retrieval calls gRPC is not done with",
                                  static_cast<double>(retrieval_service.calls_in_flight())));
      families.push_back(G::Gauge("twotower_response_bytes_in_flight",
                                  "Bytes of --max_response_bytes the answers in flight hold",
                                  static_cast<double>(retrieval_service.response_bytes_in_flight())));
      const twotower::SearchBatcher::Stats searches = retrieval_service.search_stats();
      families.push_back(G::Gauge("twotower_index_searches", "Index searches run (a round serves many calls)",
                                  static_cast<double>(searches.searches)));
      families.push_back(G::Gauge("twotower_abandoned_searches",
                                  "Searches dropped because their caller had gone (load shedding)",
                                  static_cast<double>(searches.abandoned)));
      families.push_back(G::Gauge("twotower_listener_accepting", "1 while the Retrieval listener accepts connections",
                                  serving_health.accepting() ? 1 : 0));
      families.push_back(G::Gauge("twotower_resident_memory_bytes", "Resident memory of the server process",
                                  ResidentBytes()));
      return families;
    });
    exposer->RegisterCollectable(metrics.registry());
    exposer->RegisterCollectable(gauges);
    LogEvent("info", "metrics", {{"address", metrics_address}});
  }

  std::unique_ptr<twotower::ListenerProbe> probe;
  if (const int probe_ms = absl::GetFlag(FLAGS_listener_probe_ms); probe_ms > 0) {
    twotower::ListenerProbe::Options probe_options;
    probe_options.interval = absl::Milliseconds(probe_ms);
    probe_options.timeout = std::max(absl::Milliseconds(probe_ms), absl::Seconds(1));
    probe = std::make_unique<twotower::ListenerProbe>(
        retrieval.address, probe_options,
        [&serving_health](bool accepting) { serving_health.SetAccepting(accepting); });
  }
  // Replicas sharing an item log apply each other's changes.
  absl::Notification stop_following;
  std::thread follower;
  if (!absl::GetFlag(FLAGS_item_log_dir).empty()) {
    const absl::Duration poll = absl::Milliseconds(absl::GetFlag(FLAGS_item_log_poll_ms));
    follower = std::thread([&admin_service, &stop_following, poll] {
      while (!stop_following.WaitForNotificationWithTimeout(poll)) admin_service.FollowItemLog();
    });
  }

  LogEvent("info", "serving",
           {{"version", version}, {"address", retrieval.address}, {"admin", admin.address}});
  std::printf("serving model %s on %s (admin %s)\n", version.c_str(), retrieval.address.c_str(),
              admin.address.c_str());
  std::fflush(stdout);

  std::thread stopper([&] {
    unsigned char signal = 0;
    while (::read(stop_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    LogEvent("info", "shutting down", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
    probe.reset();
    // Load balancers and health-checking clients stop sending new calls during the drain
    // delay, while the server still answers the calls that reach it meanwhile (a proxy
    // or client that has not yet seen NOT_SERVING would otherwise get a refused call).
    serving_health.Stop();
    const absl::Duration drain_delay = absl::Milliseconds(absl::GetFlag(FLAGS_drain_delay_ms));
    if (drain_delay > absl::ZeroDuration()) {
      LogEvent("info", "draining", {{"delay_ms", absl::StrCat(absl::GetFlag(FLAGS_drain_delay_ms))}});
      pollfd second_signal = {stop_pipe[0], POLLIN, 0};
      const absl::Time drain_end = absl::Now() + drain_delay;
      for (absl::Time now = absl::Now(); now < drain_end; now = absl::Now()) {
        const int wait_ms = static_cast<int>(
            std::min<int64_t>(absl::ToInt64Milliseconds(drain_end - now) + 1, 1000));
        if (::poll(&second_signal, 1, wait_ms) > 0) {
          LogEvent("info", "second stop signal: drain delay cut short", {});
          break;
        }
      }
    }
    // grpc::Server::Shutdown drains in-flight calls but also waits for every client to
    // acknowledge its GOAWAY, and an idle client (one not inside a call) may not do so
    // before the deadline. So wait for our own in-flight calls first, then give gRPC a
    // short settle period for calls that raced with the signal.
    const absl::Time drain_deadline =
        absl::Now() + absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms));
    while (metrics.in_flight() > 0 && absl::Now() < drain_deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    const auto deadline =
        absl::ToChronoTime(std::min(drain_deadline, absl::Now() + kShutdownSettle));
    retrieval.server->Shutdown(deadline);
    admin.server->Shutdown(deadline);
  });
  retrieval.server->Wait();
  admin.server->Wait();
  stopper.join();
  stop_following.Notify();
  if (follower.joinable()) follower.join();
  LogEvent("info", "stopped",
           {{"requests", absl::StrCat(metrics.requests_total())},
            {"failed", absl::StrCat(metrics.requests_failed())}});
  return 0;
}
