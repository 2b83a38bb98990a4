// Server: a model bundle served over gRPC, in-process.
//
//   Server::Options options;
//   options.bundle = "bundles/latest";
//   options.address = "127.0.0.1:0";         // port 0: a free port
//   ASSIGN_OR_RETURN(std::unique_ptr<Server> server, Server::Create(std::move(options)));
//   ... server->address() ...
//   server->Shutdown();                      // drain, finish in-flight calls, stop
//
// Two listeners: the Retrieval API (+ gRPC health checking and reflection) on `address`,
// the Admin API on `admin_address`; optionally Prometheus metrics over HTTP. Create
// validates the options (INVALID_ARGUMENT naming the option), loads the bundle (its
// error as is), listens (UNAVAILABLE when an address cannot be bound) and starts the
// listener probe and the shared item log's follower; nothing is left running when it
// fails. twotower_server's main only maps its flags onto Options and its signals onto
// StartDrain / Stop.
//
// Health: "" (liveness) is SERVING while the Retrieval listener accepts connections;
// the Retrieval service's name (readiness) also needs the shared item log applied. Both
// turn NOT_SERVING at StartDrain and stay so.
#ifndef TWOTOWER_SERVER_SERVER_H_
#define TWOTOWER_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "index/item_index.h"
#include "server/retrieval_service.h"

namespace twotower {

class Server {
 public:
  struct Options {
    // The bundle directory to serve (required).
    std::string bundle;
    // host:port of the Retrieval and Admin listeners; port 0 picks a free port.
    std::string address = "127.0.0.1:50051";
    std::string admin_address = "127.0.0.1:50052";
    // The item index (factory empty: the bundle's index, else Flat).
    IndexOptions index = [] {
      IndexOptions o;
      o.factory.clear();
      return o;
    }();
    // Retrieval limits and dynamic batching; search_rounds 0 = one per core.
    RetrievalOptions retrieval = [] {
      RetrievalOptions r;
      r.search_rounds = 0;
      return r;
    }();
    // Largest request message; most concurrent calls per connection; gRPC's memory for
    // its transports' buffers.
    int64_t max_request_bytes = 4 << 20;
    int64_t max_concurrent_streams = 64;
    int64_t grpc_memory_bytes = int64_t{512} << 20;
    // How often a probe connects to the Retrieval listener (zero: no probe); after 3
    // probes in a row fail, health turns NOT_SERVING.
    absl::Duration listener_probe_interval = absl::Seconds(2);
    // Item journals (state_dir) or the item log shared by replicas (item_log_dir, polled
    // every item_log_poll); at most one of them; empty = none.
    std::string state_dir;
    std::string item_log_dir;
    absl::Duration item_log_poll = absl::Seconds(1);
    // host:port for GET /metrics (Prometheus text); empty = none.
    std::string metrics_address;
    // Admin calls must carry "authorization: Bearer <admin_token>" (empty = no token).
    std::string admin_token;
    // ReloadModel loads only bundles under this directory (empty = anywhere).
    std::string bundle_root;
    // PEM contents: TLS for the Retrieval listener when tls_cert_pem is set (with
    // tls_key_pem); clients must present a certificate tls_client_ca_pem signed, if set.
    std::string tls_cert_pem;
    std::string tls_key_pem;
    std::string tls_client_ca_pem;
    // Connections closed (GOAWAY) after about this age, their calls given the grace to
    // finish (zero: never), so DNS-based clients find new replicas.
    absl::Duration max_connection_age = absl::Minutes(5);
    absl::Duration max_connection_age_grace = absl::Seconds(10);
    // Shutdown: how long the server keeps serving with health NOT_SERVING before it stops
    // accepting calls, then how long in-flight calls get to finish.
    absl::Duration drain_delay = absl::Seconds(2);
    absl::Duration shutdown_grace = absl::Seconds(5);
  };

  // INVALID_ARGUMENT naming the first option out of its range ("max_k must be in ...").
  static absl::Status Validate(const Options& options);

  // Validates, loads the bundle, starts listening. See the header comment.
  static absl::StatusOr<std::unique_ptr<Server>> Create(Options options);

  // Stops (Shutdown without the drain delay) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Addresses as bound (port 0 replaced) and the model served at start.
  const std::string& address() const;
  const std::string& admin_address() const;
  const std::string& model_version() const;

  // Health turns NOT_SERVING; calls are still served (load balancers move away).
  void StartDrain();
  // Waits for the in-flight Retrieval calls (up to shutdown_grace), stops the listeners
  // and the background threads. Idempotent: a call made while another runs returns once
  // that one has finished. Also implies StartDrain.
  void Stop();
  // StartDrain, drain_delay, Stop (without the delay when already stopped).
  void Shutdown();
  // Blocks until the listeners have stopped.
  void Wait();

  // Retrieval calls served so far, and how many failed.
  int64_t requests_total() const;
  int64_t requests_failed() const;

 private:
  struct State;
  explicit Server(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SERVER_H_
