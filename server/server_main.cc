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
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/tower.h"
#include "server/search_batcher.h"
#include "server/server.h"
#include "util/admin_token.h"
#include "util/file.h"
#include "util/program_usage.h"

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

// Reads a PEM flag's file into *pem ("" stays ""); false (after printing) when unreadable.
bool ReadPem(const char* flag, const std::string& file, std::string* pem) {
  if (file.empty()) return true;
  absl::StatusOr<std::string> contents = twotower::ReadFile(file, kPemFile);
  if (!contents.ok()) {
    std::fprintf(stderr, "error: --%s %s: %s\n", flag, file.c_str(), std::string(contents.status().message()).c_str());
    return false;
  }
  if (contents->empty()) {  // an empty file must not turn TLS or client certificates off
    std::fprintf(stderr, "error: --%s %s: empty file\n", flag, file.c_str());
    return false;
  }
  *pem = *std::move(contents);
  return true;
}

// The flags as Server::Options; false (after printing) when a file they name is unreadable
// or empty, or a number is not one.
bool OptionsFromFlags(twotower::Server::Options* o) {
  o->bundle = absl::GetFlag(FLAGS_bundle);
  o->address = absl::GetFlag(FLAGS_address);
  o->admin_address = absl::GetFlag(FLAGS_admin_address);
  o->index.factory = absl::GetFlag(FLAGS_index);
  o->index.ef_search = absl::GetFlag(FLAGS_ef_search);
  o->index.nprobe = absl::GetFlag(FLAGS_nprobe);
  o->index.half_first_pass = absl::GetFlag(FLAGS_half_first_pass);
  twotower::RetrievalOptions& r = o->retrieval;
  r.max_k = absl::GetFlag(FLAGS_max_k);
  r.max_batch = absl::GetFlag(FLAGS_max_batch);
  r.search_batch = absl::GetFlag(FLAGS_search_batch);
  r.search_rounds = absl::GetFlag(FLAGS_search_rounds);
  const double hand_off_ms = absl::GetFlag(FLAGS_search_hand_off_ms);
  if (!(hand_off_ms >= 0)) {  // NaN fails this too (as a Duration it would be infinite)
    std::fprintf(stderr, "error: --search_hand_off_ms must be >= 0 (inf allowed)\n");
    return false;
  }
  r.search_hand_off = absl::Milliseconds(hand_off_ms);
  r.max_exclude = absl::GetFlag(FLAGS_max_exclude);
  r.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  r.max_filters = absl::GetFlag(FLAGS_max_filters);
  r.max_filter_values = absl::GetFlag(FLAGS_max_filter_values);
  r.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  o->max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  o->max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  o->grpc_memory_bytes = absl::GetFlag(FLAGS_grpc_memory_bytes);
  o->listener_probe_interval = absl::Milliseconds(absl::GetFlag(FLAGS_listener_probe_ms));
  o->state_dir = absl::GetFlag(FLAGS_state_dir);
  o->item_log_dir = absl::GetFlag(FLAGS_item_log_dir);
  o->item_log_poll = absl::Milliseconds(absl::GetFlag(FLAGS_item_log_poll_ms));
  o->metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o->bundle_root = absl::GetFlag(FLAGS_bundle_root);
  o->max_connection_age = absl::Milliseconds(absl::GetFlag(FLAGS_max_connection_age_ms));
  o->max_connection_age_grace = absl::Milliseconds(absl::GetFlag(FLAGS_max_connection_age_grace_ms));
  o->drain_delay = absl::Milliseconds(absl::GetFlag(FLAGS_drain_delay_ms));
  o->shutdown_grace = absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms));
  absl::StatusOr<std::string> token = twotower::ReadAdminToken(absl::GetFlag(FLAGS_admin_token_file));
  if (!token.ok()) {
    std::fprintf(stderr, "error: --admin_token_file: %s\n", std::string(token.status().message()).c_str());
    return false;
  }
  o->admin_token = *std::move(token);
  return ReadPem("tls_cert", absl::GetFlag(FLAGS_tls_cert), &o->tls_cert_pem) &&
         ReadPem("tls_key", absl::GetFlag(FLAGS_tls_key), &o->tls_key_pem) &&
         ReadPem("tls_client_ca", absl::GetFlag(FLAGS_tls_client_ca), &o->tls_client_ca_pem);
}

}  // namespace

int main(int argc, char** argv) {
  twotower::ParseCommandLineWithUsage(
      argc, argv,
      "Serves a twotower model bundle over gRPC: twotower_server --bundle DIR "
      "[--address HOST:PORT] [--admin_address HOST:PORT] [--index FACTORY]");
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
  twotower::Server::Options options;
  if (!OptionsFromFlags(&options)) return 2;
  if (absl::Status s = twotower::Server::Validate(options); !s.ok()) {
    // Options are named like their flags; the TLS checks name the flags already.
    const std::string message(s.message());
    std::fprintf(stderr, "error: %s%s\n", absl::StartsWith(message, "--") ? "" : "--", message.c_str());
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

  RaiseDescriptorLimit();
  const absl::Duration drain_delay = options.drain_delay;
  absl::StatusOr<std::unique_ptr<twotower::Server>> server = twotower::Server::Create(std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "error: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("serving model %s on %s (admin %s)\n", (*server)->model_version().c_str(), (*server)->address().c_str(),
              (*server)->admin_address().c_str());
  std::fflush(stdout);

  std::thread stopper([&] {
    unsigned char signal = 0;
    while (::read(stop_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    LogEvent("info", "shutting down", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
    // Load balancers and health-checking clients stop sending new calls during the drain
    // delay, while the server still answers the calls that reach it meanwhile. A second
    // signal cuts the delay short.
    (*server)->StartDrain();
    if (drain_delay > absl::ZeroDuration()) {
      LogEvent("info", "draining", {{"delay_ms", absl::StrCat(absl::ToInt64Milliseconds(drain_delay))}});
      pollfd second_signal = {stop_pipe[0], POLLIN, 0};
      const absl::Time drain_end = absl::Now() + drain_delay;
      for (absl::Time now = absl::Now(); now < drain_end; now = absl::Now()) {
        const int wait_ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(drain_end - now) + 1, 1000));
        if (::poll(&second_signal, 1, wait_ms) > 0) {
          LogEvent("info", "second stop signal: drain delay cut short", {});
          break;
        }
      }
    }
    (*server)->Stop();
  });
  (*server)->Wait();
  stopper.join();
  return 0;
}
