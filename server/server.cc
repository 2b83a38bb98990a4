#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "index/bundle_index.h"
#include "server/admin_service.h"
#include "server/listener_probe.h"
#include "server/server_metrics.h"
#include "server/snapshot.h"
#include "util/file.h"
#include "util/status_macros.h"
#include "util/tls_files.h"

namespace twotower {
namespace {

// How long gRPC gets to finish calls that arrived after the drain began (see Stop).
constexpr absl::Duration kShutdownSettle = absl::Milliseconds(250);

// host:port with the port replaced by the one actually bound (for ":0").
std::string WithPort(const std::string& address, int port) {
  const size_t colon = address.rfind(':');
  return absl::StrCat(colon == std::string::npos ? address : address.substr(0, colon), ":", port);
}

struct Listener {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // as bound
};

struct ListenerOptions {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  grpc::ResourceQuota* quota = nullptr;  // bounds the memory of its transports; may be null
  absl::Duration max_age;                // zero: connections are never aged
  absl::Duration max_age_grace;
};

// Starts a gRPC server with `service` on `address`; UNAVAILABLE when it cannot listen.
absl::StatusOr<Listener> Listen(const std::string& address, grpc::Service* service, const Server::Options& options,
                                const ListenerOptions& listener_options) {
  grpc::ServerBuilder builder;
  if (listener_options.max_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(listener_options.max_age)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(listener_options.max_age_grace)));
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_request_bytes));
  // One listening socket per address. With SO_REUSEPORT gRPC opens one per poller, and
  // for port 0 each of them bound its own free port: an unprinted extra port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(options.max_concurrent_streams));
  // Compressed requests are refused (UNIMPLEMENTED, "compression algorithm disabled")
  // before they are inflated: gRPC 1.51 checks the request size limit on the compressed
  // bytes and would inflate a small request into any size.
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  if (listener_options.quota != nullptr) builder.SetResourceQuota(*listener_options.quota);
  int port = 0;
  builder.AddListeningPort(address, listener_options.credentials, &port);
  builder.RegisterService(service);
  Listener listener;
  listener.server = builder.BuildAndStart();
  if (listener.server != nullptr && port == 0) {  // built, but the port did not bind
    listener.server->Shutdown();
    listener.server.reset();
  }
  if (listener.server == nullptr) return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  listener.address = WithPort(address, port);
  return listener;
}

// gRPC health of the Retrieval listener (see the header). After Stop both stay NOT_SERVING.
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
    health_->SetServingStatus(v1::Retrieval::service_full_name(), alive && item_log_applied_);
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
  absl::StatusOr<std::string> status = ReadFile("/proc/self/status", {.max_bytes = 1 << 16});
  if (!status.ok()) return 0;
  const size_t at = status->find("VmRSS:");
  if (at == std::string::npos) return 0;
  return std::strtod(status->c_str() + at + 6, nullptr) * 1024;
}

absl::Status CheckRange(const char* name, int64_t value, int64_t min, int64_t max) {
  if (value >= min && value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be in ", min, "..", max, ", got ", value));
}

absl::Status CheckRange(const char* name, absl::Duration value, absl::Duration max) {
  if (value >= absl::ZeroDuration() && value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, " must be in 0..", absl::FormatDuration(max), ", got ", absl::FormatDuration(value)));
}

}  // namespace

struct Server::State {
  Options options;
  std::string model_version;
  SnapshotHolder snapshots;
  ServerMetrics metrics;
  std::unique_ptr<RetrievalService> retrieval_service;
  std::unique_ptr<AdminService> admin_service;
  ServingHealth health;
  std::unique_ptr<grpc::ResourceQuota> quota;
  Listener retrieval;
  Listener admin;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<ScrapeTimeGauges> gauges;
  // Reset by StartDrain, which may run on another thread than Stop.
  absl::Mutex probe_mu;
  std::unique_ptr<ListenerProbe> probe ABSL_GUARDED_BY(probe_mu);
  absl::Notification stop_following;
  std::thread follower;
  absl::Mutex stop_mu;
  bool stopped ABSL_GUARDED_BY(stop_mu) = false;

  std::vector<prometheus::MetricFamily> CollectGauges() const;
  // The steps of Create: the bundle into `snapshots`; the Retrieval and Admin services,
  // wired to `health`; both listeners (UNAVAILABLE when an address cannot be bound); the
  // metrics exposer, the listener probe and the item log's follower.
  absl::Status LoadModel();
  void CreateServices();
  absl::Status Listen();
  absl::Status StartBackground();
};

std::vector<prometheus::MetricFamily> Server::State::CollectGauges() const {
  using G = ScrapeTimeGauges;
  std::vector<prometheus::MetricFamily> families;
  if (const std::shared_ptr<const Snapshot> snapshot = snapshots.Get(); snapshot != nullptr) {
    families.push_back(G::Gauge(
        "twotower_model_info", "The model served (value 1)", 1,
        {{"index", snapshot->catalogue->index_options().factory}, {"model_version", snapshot->model_version}}));
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
                              static_cast<double>(retrieval_service->calls_in_flight())));
  families.push_back(G::Gauge("twotower_response_bytes_in_flight",
                              "Bytes of --max_response_bytes the answers in flight hold",
                              static_cast<double>(retrieval_service->response_bytes_in_flight())));
  const SearchBatcher::Stats searches = retrieval_service->search_stats();
  families.push_back(G::Gauge("twotower_index_searches", "Index searches run (a round serves many calls)",
                              static_cast<double>(searches.searches)));
  families.push_back(G::Gauge("twotower_abandoned_searches",
                              "Searches dropped because their caller had gone (load shedding)",
                              static_cast<double>(searches.abandoned)));
  families.push_back(G::Gauge("twotower_listener_accepting", "1 while the Retrieval listener accepts connections",
                              health.accepting() ? 1 : 0));
  families.push_back(
      G::Gauge("twotower_resident_memory_bytes", "Resident memory of the server process", ResidentBytes()));
  return families;
}

absl::Status Server::Validate(const Options& o) {
  if (o.bundle.empty()) return absl::InvalidArgumentError("bundle is required");
  // Every number is bounded: a typo must not become a huge allocation or thread count.
  const RetrievalOptions& r = o.retrieval;
  RETURN_IF_ERROR(CheckRange("max_k", r.max_k, 1, 100000));
  RETURN_IF_ERROR(CheckRange("max_batch", r.max_batch, 1, 65536));
  RETURN_IF_ERROR(CheckRange("search_batch", r.search_batch, 1, 4096));
  RETURN_IF_ERROR(CheckRange("search_rounds", r.search_rounds, 0, 256));
  RETURN_IF_ERROR(CheckRange("max_exclude", r.max_exclude, 0, 1000000));
  RETURN_IF_ERROR(CheckRange("max_filters", r.max_filters, 0, 255));
  RETURN_IF_ERROR(CheckRange("max_filter_values", r.max_filter_values, 0, 1000000));
  RETURN_IF_ERROR(CheckRange("max_in_flight", r.max_in_flight, 0, 1000000));
  RETURN_IF_ERROR(CheckRange("max_response_bytes", r.max_response_bytes, 1 << 20, int64_t{1} << 40));
  if (!(r.search_hand_off >= absl::ZeroDuration())) {
    return absl::InvalidArgumentError("search_hand_off_ms must be >= 0 (inf allowed)");
  }
  RETURN_IF_ERROR(CheckRange("max_request_bytes", o.max_request_bytes, 1, int64_t{1} << 30));
  RETURN_IF_ERROR(CheckRange("max_concurrent_streams", o.max_concurrent_streams, 1, 100000));
  RETURN_IF_ERROR(CheckRange("grpc_memory_bytes", o.grpc_memory_bytes, 16 << 20, int64_t{1} << 40));
  RETURN_IF_ERROR(CheckRange("ef_search", o.index.ef_search, 0, 65536));
  RETURN_IF_ERROR(CheckRange("nprobe", o.index.nprobe, 0, 1 << 20));
  // gRPC takes the connection ages as int milliseconds.
  const absl::Duration int_ms = absl::Milliseconds(2147483647);
  RETURN_IF_ERROR(CheckRange("shutdown_grace_ms", o.shutdown_grace, absl::Hours(1)));
  RETURN_IF_ERROR(CheckRange("drain_delay_ms", o.drain_delay, absl::Hours(1)));
  RETURN_IF_ERROR(CheckRange("max_connection_age_ms", o.max_connection_age, int_ms));
  RETURN_IF_ERROR(CheckRange("max_connection_age_grace_ms", o.max_connection_age_grace, int_ms));
  RETURN_IF_ERROR(CheckRange("listener_probe_ms", o.listener_probe_interval, absl::Hours(1)));
  if (o.item_log_poll < absl::Milliseconds(1) || o.item_log_poll > absl::Hours(1)) {
    return absl::InvalidArgumentError("item_log_poll_ms must be in 1..3600000");
  }
  if (absl::Status s = ValidateIndexRequest(o.index); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("index / ef_search / nprobe: ", s.message()));
  }
  if (!o.state_dir.empty() && !o.item_log_dir.empty()) {
    // Two records of the same changes could disagree; one place holds them.
    return absl::InvalidArgumentError("state_dir and item_log_dir cannot be used together");
  }
  if (!o.tls_client_ca_pem.empty() && o.tls_cert_pem.empty()) {
    // Client certificates need TLS: serving plaintext instead would drop the check silently.
    return absl::InvalidArgumentError("tls_client_ca needs tls_cert and tls_key");
  }
  if (o.tls_cert_pem.empty() != o.tls_key_pem.empty()) {
    return absl::InvalidArgumentError("tls_cert and tls_key go together");
  }
  if (!o.tls_cert_pem.empty()) {
    RETURN_IF_ERROR(CheckTlsServerFiles(o.tls_cert_pem, o.tls_key_pem,
                                        o.tls_client_ca_pem.empty() ? nullptr : &o.tls_client_ca_pem));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(Options options) {
  RETURN_IF_ERROR(Validate(options));
  if (options.retrieval.search_rounds == 0) {
    options.retrieval.search_rounds = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  auto state = std::make_unique<State>();
  state->options = std::move(options);
  RETURN_IF_ERROR(state->LoadModel());
  state->CreateServices();
  RETURN_IF_ERROR(state->Listen());
  // From here on a failure must stop both listeners: the Server's destructor does.
  std::unique_ptr<Server> server(new Server(std::move(state)));
  State& st = *server->state_;
  RETURN_IF_ERROR(st.StartBackground());
  LogEvent("info", "serving",
           {{"version", st.model_version}, {"address", st.retrieval.address}, {"admin", st.admin.address}});
  return server;
}

absl::Status Server::State::LoadModel() {
  const Options& o = options;
  LogEvent("info", "loading model",
           {{"bundle", o.bundle}, {"index", o.index.factory.empty() ? "the bundle's (else Flat)" : o.index.factory}});
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot,
                   LoadSnapshot(o.bundle, o.index, o.state_dir, o.item_log_dir));
  model_version = snapshot->model_version;
  LogEvent(snapshot->catalogue->index_ignores_bundle() ? "warn" : "info", "model loaded",
           {{"version", model_version},
            {"items", absl::StrCat(snapshot->catalogue->size())},
            {"index", snapshot->catalogue->index_note()},
            {"seen_item_bytes", absl::StrCat(snapshot->bundle->seen_items.MemoryBytes())},
            {"seconds", absl::StrCat(absl::ToDoubleSeconds(snapshot->load_duration))}});
  snapshots.Swap(std::move(snapshot));  // the holder alone owns it: a reload can free it
  return absl::OkStatus();
}

void Server::State::CreateServices() {
  const Options& o = options;
  retrieval_service = std::make_unique<RetrievalService>(&snapshots, &metrics, o.retrieval);
  AdminService::Options admin_options;
  admin_options.state_dir = o.state_dir;
  admin_options.item_log_dir = o.item_log_dir;
  admin_options.bundle_root = o.bundle_root;
  admin_options.token = o.admin_token;
  RetrievalService* retrieval_service_ptr = retrieval_service.get();
  ServingHealth* health_ptr = &health;
  admin_options.search_stats = [retrieval_service_ptr] { return retrieval_service_ptr->search_stats(); };
  admin_options.item_log_healthy = [health_ptr](bool ok) { health_ptr->SetItemLogApplied(ok); };
  admin_options.serving_status = [retrieval_service_ptr, health_ptr](v1::GetStatusResponse* status) {
    status->set_retrieval_listener_accepting(health_ptr->accepting());
    status->set_calls_in_flight(retrieval_service_ptr->calls_in_flight());
    status->set_response_bytes_in_flight(retrieval_service_ptr->response_bytes_in_flight());
  };
  admin_service = std::make_unique<AdminService>(&snapshots, &metrics, std::move(admin_options));
}

absl::Status Server::State::Listen() {
  const Options& o = options;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ListenerOptions public_listener;
  if (!o.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({o.tls_key_pem, o.tls_cert_pem});
    if (!o.tls_client_ca_pem.empty()) {
      tls.pem_root_certs = o.tls_client_ca_pem;
      tls.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    public_listener.credentials = grpc::SslServerCredentials(tls);
  }
  quota = std::make_unique<grpc::ResourceQuota>("twotower-retrieval");
  quota->Resize(static_cast<size_t>(o.grpc_memory_bytes));
  public_listener.quota = quota.get();
  public_listener.max_age = o.max_connection_age;
  public_listener.max_age_grace = o.max_connection_age_grace;
  ASSIGN_OR_RETURN(retrieval, twotower::Listen(o.address, retrieval_service.get(), o, public_listener));
  absl::StatusOr<Listener> admin_listener =
      twotower::Listen(o.admin_address, admin_service.get(), o, ListenerOptions{});
  if (!admin_listener.ok()) {
    retrieval.server->Shutdown();
    return admin_listener.status();
  }
  admin = *std::move(admin_listener);
  health.Attach(retrieval.server->GetHealthCheckService());
  return absl::OkStatus();
}

absl::Status Server::State::StartBackground() {
  const Options& o = options;
  if (!o.metrics_address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(o.metrics_address, /*num_threads=*/1);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", o.metrics_address, ": ", e.what()));
    }
    const State* gauge_state = this;
    gauges = std::make_shared<ScrapeTimeGauges>([gauge_state] { return gauge_state->CollectGauges(); });
    exposer->RegisterCollectable(metrics.registry());
    exposer->RegisterCollectable(gauges);
    LogEvent("info", "metrics", {{"address", o.metrics_address}});
  }
  if (o.listener_probe_interval > absl::ZeroDuration()) {
    ListenerProbe::Options probe_options;
    probe_options.interval = o.listener_probe_interval;
    probe_options.timeout = std::max(o.listener_probe_interval, absl::Seconds(1));
    ServingHealth* health_ptr = &health;
    absl::MutexLock lock(&probe_mu);
    probe = std::make_unique<ListenerProbe>(retrieval.address, probe_options,
                                            [health_ptr](bool accepting) { health_ptr->SetAccepting(accepting); });
  }
  // Replicas sharing an item log apply each other's changes.
  if (!o.item_log_dir.empty()) {
    AdminService* admin_service_ptr = admin_service.get();
    absl::Notification* stop = &stop_following;
    const absl::Duration poll = o.item_log_poll;
    follower = std::thread([admin_service_ptr, stop, poll] {
      while (!stop->WaitForNotificationWithTimeout(poll)) admin_service_ptr->FollowItemLog();
    });
  }
  return absl::OkStatus();
}

Server::Server(std::unique_ptr<State> state) : state_(std::move(state)) {}

Server::~Server() { Stop(); }

const std::string& Server::address() const { return state_->retrieval.address; }
const std::string& Server::admin_address() const { return state_->admin.address; }
const std::string& Server::model_version() const { return state_->model_version; }
int64_t Server::requests_total() const { return state_->metrics.requests_total(); }
int64_t Server::requests_failed() const { return state_->metrics.requests_failed(); }

void Server::StartDrain() {
  // NOT_SERVING first (a probe stuck in a connect would delay it), and for good: a report
  // of the probe after this changes nothing. Then the probe stops (its callback takes only
  // the health's lock, so stopping it under probe_mu cannot deadlock).
  state_->health.Stop();
  absl::MutexLock lock(&state_->probe_mu);
  state_->probe.reset();
}

void Server::Stop() {
  State& s = *state_;
  // Held to the end: another Stop (or the destructor) waits until this one is done.
  absl::MutexLock lock(&s.stop_mu);
  if (s.stopped) return;
  s.stopped = true;
  StartDrain();
  // grpc::Server::Shutdown drains in-flight calls but also waits for every client to
  // acknowledge its GOAWAY, and an idle client (one not inside a call) may not do so
  // before the deadline. So wait for our own in-flight calls first, then give gRPC a
  // short settle period for calls that raced with the drain.
  const absl::Time drain_deadline = absl::Now() + s.options.shutdown_grace;
  while (s.metrics.in_flight() > 0 && absl::Now() < drain_deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const auto deadline = absl::ToChronoTime(std::min(drain_deadline, absl::Now() + kShutdownSettle));
  s.retrieval.server->Shutdown(deadline);
  s.admin.server->Shutdown(deadline);
  s.stop_following.Notify();
  if (s.follower.joinable()) s.follower.join();
  s.exposer.reset();
  LogEvent(
      "info", "stopped",
      {{"requests", absl::StrCat(s.metrics.requests_total())}, {"failed", absl::StrCat(s.metrics.requests_failed())}});
}

void Server::Shutdown() {
  {
    absl::MutexLock lock(&state_->stop_mu);
    if (state_->stopped) return;
  }
  StartDrain();
  if (state_->options.drain_delay > absl::ZeroDuration()) {
    LogEvent("info", "draining", {{"delay_ms", absl::StrCat(absl::ToInt64Milliseconds(state_->options.drain_delay))}});
    absl::SleepFor(state_->options.drain_delay);
  }
  Stop();
}

void Server::Wait() {
  state_->retrieval.server->Wait();
  state_->admin.server->Wait();
}

}  // namespace twotower
