// Hostile clients against a real server: for each attack, a fresh server, one normal
// client calling Retrieve throughout, and the attack; prints the server's peak RSS and
// the normal client's latency and failures during the attack, and whether the server
// still serves a new connection afterwards.
//
//   twotower_hostile_bench --bundle demo/bundles/latest [--user u00000]
//       [--attacks nonreading,descriptors,filters,gzip] [--seconds 10]
//       [--server_binary PATH] [--server_flags=--max_response_bytes=67108864,...]
//
// Attacks:
//   nonreading   4 HTTP/2 connections that announce a window of 0 and never read, each
//                opening 60 BatchRetrieve calls of 1,024 users x k = 1,000
//   descriptors  1,100 connections that send the HTTP/2 preface, held 3 s, then closed
//   filters      4 clients sending Retrieve calls with 20,000 filters each
//   gzip         4 clients sending gzip requests that inflate to 200 MB
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/raw_http2.h"
#include "tests/server_process.h"

ABSL_FLAG(std::string, bundle, "", "Bundle to serve (required)");
ABSL_FLAG(std::string, user, "u00000", "A user id of the bundle, for the normal client");
ABSL_FLAG(std::string, attacks, "nonreading,descriptors,filters,gzip", "Attacks to run");
ABSL_FLAG(int, seconds, 10, "How long each attack lasts");
ABSL_FLAG(std::string, server_binary, "", "Server to attack (default: this build's)");
ABSL_FLAG(std::string, server_flags, "", "Extra server flags, comma-separated");

namespace twotower {
namespace {

using testing::ServerProcess;

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

v1::RetrieveRequest UserRequest(int k) {
  v1::RetrieveRequest request;
  request.set_user_id(absl::GetFlag(FLAGS_user));
  request.set_k(k);
  return request;
}

// A normal client: one Retrieve at a time, 2 s deadline, on a connection made once.
class NormalClient {
 public:
  explicit NormalClient(const std::string& address)
      : stub_(testing::NewRetrievalStub(address, 777)), thread_([this] { Run(); }) {}
  ~NormalClient() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  void Report() const {
    std::vector<double> sorted = latencies_ms_;
    std::sort(sorted.begin(), sorted.end());
    const auto at = [&](double p) {
      return sorted.empty() ? 0.0 : sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
    };
    std::printf("  normal Retrieve: %zu ok, %d failed; p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                sorted.size(), failed_, at(0.5), at(0.99), sorted.empty() ? 0.0 : sorted.back());
    if (failed_ > 0) std::printf("  last failure: %s\n", last_error_.c_str());
  }

 private:
  void Run() {
    while (!stop_) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      v1::RetrieveResponse response;
      const auto start = std::chrono::steady_clock::now();
      const grpc::Status status = stub_->Retrieve(&context, UserRequest(10), &response);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (status.ok()) {
        latencies_ms_.push_back(ms);
      } else {
        ++failed_;
        last_error_ = absl::StrCat(status.error_code(), " ", status.error_message());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::unique_ptr<v1::Retrieval::Stub> stub_;
  std::atomic<bool> stop_{false};
  std::vector<double> latencies_ms_;
  int failed_ = 0;
  std::string last_error_;
  std::thread thread_;
};

bool ServesANewConnection(const std::string& address) {
  auto stub = testing::NewRetrievalStub(address, 888);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  v1::RetrieveResponse response;
  return stub->Retrieve(&context, UserRequest(10), &response).ok();
}

void Attack(const std::string& name, ServerProcess& server, std::atomic<bool>& stop) {
  const std::string address = server.address();
  if (name == "nonreading") {
    v1::BatchRetrieveRequest batch;
    for (int i = 0; i < 1024; ++i) *batch.add_requests() = UserRequest(1000);
    const std::string message = batch.SerializeAsString();
    std::vector<std::unique_ptr<testing::NonReadingHttp2Client>> clients;
    for (int c = 0; c < 4; ++c) {
      clients.push_back(std::make_unique<testing::NonReadingHttp2Client>(PortOf(address)));
      for (int i = 0; i < 60 && clients.back()->ok(); ++i) {
        clients.back()->Call("/twotower.v1.Retrieval/BatchRetrieve", message);
      }
    }
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } else if (name == "descriptors") {
    std::vector<int> fds;
    for (int i = 0; i < 1100; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) break;
      fds.push_back(fd);
      sockaddr_in to = {};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<uint16_t>(PortOf(address)));
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) break;
      static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      (void)::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL);
    }
    std::printf("  %zu connections opened\n", fds.size());
    std::this_thread::sleep_for(std::chrono::seconds(3));
    for (int fd : fds) ::close(fd);
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } else if (name == "filters" || name == "gzip") {
    v1::RetrieveRequest request = UserRequest(10);
    if (name == "filters") {
      for (int f = 0; f < 20000; ++f) {
        v1::ItemFilter* filter = request.add_filters();
        filter->set_feature("genres");
        filter->add_any_of("g1");
      }
    } else {
      request.set_user_id(std::string(200 << 20, 'a'));
    }
    std::vector<std::thread> threads;
    std::atomic<int> sent{0};
    std::map<int, int> codes;
    std::mutex mu;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto stub = testing::NewRetrievalStub(address, 900 + t);
        while (!stop) {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          if (name == "gzip") context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
          v1::RetrieveResponse response;
          const grpc::Status status = stub->Retrieve(&context, request, &response);
          ++sent;
          std::lock_guard<std::mutex> lock(mu);
          ++codes[status.error_code()];
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    std::printf("  %d hostile calls; status codes:", sent.load());
    for (const auto& [code, count] : codes) std::printf(" %d x%d", code, count);
    std::printf("\n");
  }
}

int Main() {
  const std::string bundle = absl::GetFlag(FLAGS_bundle);
  if (bundle.empty()) {
    std::fprintf(stderr, "error: --bundle is required\n");
    return 2;
  }
  std::vector<std::string> flags;
  for (absl::string_view flag : absl::StrSplit(absl::GetFlag(FLAGS_server_flags), ',', absl::SkipEmpty())) {
    flags.emplace_back(flag);
  }
  std::vector<std::string> prefix;
  if (const std::string binary = absl::GetFlag(FLAGS_server_binary); !binary.empty()) {
    prefix = {"/bin/sh", "-c", "exec " + binary + " \"$@\""};
  }
  for (absl::string_view attack : absl::StrSplit(absl::GetFlag(FLAGS_attacks), ',', absl::SkipEmpty())) {
    const std::string name(attack);
    ServerProcess server;
    if (absl::Status s = server.Start(bundle, flags, prefix); !s.ok()) {
      std::fprintf(stderr, "error: cannot start the server: %s\n", s.ToString().c_str());
      return 1;
    }
    std::printf("%s: server RSS before %.0f MB\n", name.c_str(), server.ResidentMb());
    std::fflush(stdout);
    NormalClient normal(server.address());
    std::atomic<bool> stop{false};
    double peak = 0;
    std::thread attacker([&] { Attack(name, server, stop); });
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_seconds));
    while (std::chrono::steady_clock::now() < end) {
      peak = std::max(peak, server.ResidentMb());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    stop = true;
    attacker.join();
    normal.Stop();
    peak = std::max(peak, server.ResidentMb());
    std::printf("  peak server RSS during the attack: %.0f MB\n", peak);
    normal.Report();
    std::printf("  a new connection is served afterwards: %s\n",
                ServesANewConnection(server.address()) ? "yes" : "NO");
    std::fflush(stdout);
    server.Stop(SIGKILL, std::chrono::seconds(5));
  }
  return 0;
}

}  // namespace
}  // namespace twotower

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return twotower::Main();
}
