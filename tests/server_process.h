// A twotower_server child process on free loopback ports, for the end-to-end tests and
// the serving benchmark.
#ifndef TWOTOWER_TESTS_SERVER_PROCESS_H_
#define TWOTOWER_TESTS_SERVER_PROCESS_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/test_util.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"

extern char** environ;

namespace twotower::testing {

// A Retrieval stub on a channel of its own (`channel_id` keeps gRPC from sharing one
// connection between channels to the same address), as a separate caller would have.
inline std::unique_ptr<v1::Retrieval::Stub> NewRetrievalStub(const std::string& address, int channel_id) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.channel_id", channel_id);
  return v1::Retrieval::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

// Starts argv[0] (a path) with stdout to `stdout_fd` (-1: inherit); -1 on failure.
inline pid_t Spawn(const std::vector<std::string>& args, int stdout_fd) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return error == 0 ? pid : -1;
}

struct RunResult {
  int exit_code = -1;  // -1: did not start or did not exit normally
  std::string out;     // stdout
};

// Runs a command to completion, capturing its stdout (stderr goes to the test log).
inline RunResult RunCommand(const std::vector<std::string>& args) {
  RunResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return result;
  const pid_t pid = Spawn(args, fds[1]);
  ::close(fds[1]);
  if (pid > 0) {
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buffer, sizeof buffer)) > 0) result.out.append(buffer, n);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  }
  ::close(fds[0]);
  return result;
}

// A loopback port nothing listens on now (the kernel's pick), for a replica that must
// come back on the same address after a restart.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// A context with a 10 s deadline.
inline std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

// A twotower_server child process on free loopback ports.
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    if (pid_ > 0) {  // a test failed before stopping it
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) ::close(stdout_);
  }

  // How long Start waits for the ready line (a server building a large index needs more).
  void set_start_timeout(std::chrono::seconds timeout) { start_timeout_ = timeout; }

  // Starts the server and waits (up to 60 s, or set_start_timeout) for its ready line. `command_prefix` runs
  // it through another program (e.g. {"/bin/sh", "-c", "ulimit -n 256; exec \"$0\" \"$@\""}).
  absl::Status Start(const std::string& bundle, const std::vector<std::string>& extra_flags = {},
                     const std::vector<std::string>& command_prefix = {}) {
    std::vector<std::string> args = command_prefix;
    for (const std::string& arg : {BinaryDir() + "/twotower_server", "--bundle=" + bundle,
                                   std::string("--address=127.0.0.1:0"),
                                   std::string("--admin_address=127.0.0.1:0")}) {
      args.push_back(arg);
    }
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    pid_ = Spawn(args, fds[1]);
    ::close(fds[1]);
    stdout_ = fds[0];
    if (pid_ <= 0) return absl::InternalError("cannot start " + args[0]);

    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + start_timeout_;
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return absl::DeadlineExceededError(
            "no ready line from the server within " + std::to_string(start_timeout_.count()) + " s");
      }
      pollfd poll_fd = {stdout_, POLLIN, 0};
      if (::poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) continue;
      char buffer[512];
      const ssize_t n = ::read(stdout_, buffer, sizeof buffer);
      if (n <= 0) return absl::InternalError("server exited before it was ready (stdout so far: " + line + ")");
      line.append(buffer, n);
    }
    // "serving model <version> on <host:port> (admin <host:port>)"
    const std::vector<std::string> words =
        absl::StrSplit(line.substr(0, line.find('\n')), ' ');
    if (words.size() != 7u || words[0] != "serving" || words[3] != "on" || words[5] != "(admin") {
      return absl::InternalError("unexpected ready line: " + line);
    }
    version_ = words[2];
    address_ = words[4];
    admin_address_ = words[6].substr(0, words[6].size() - 1);  // drop ")"
    retrieval_ = v1::Retrieval::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    admin_ = v1::Admin::NewStub(
        grpc::CreateChannel(admin_address_, grpc::InsecureChannelCredentials()));
    return absl::OkStatus();
  }

  // Sends `signal` and waits up to `timeout` for the exit; the wait status, or -1 if the
  // process is still running (it is then killed).
  int Stop(int signal, std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return status;
  }

  bool running() const { return pid_ > 0; }
  const std::string& version() const { return version_; }
  const std::string& address() const { return address_; }
  const std::string& admin_address() const { return admin_address_; }
  v1::Retrieval::Stub& retrieval() { return *retrieval_; }
  v1::Admin::Stub& admin() { return *admin_; }
  pid_t pid() const { return pid_; }
  // CPU time (user + system) the process has used so far, in seconds; -1 if unknown.
  // /proc counts in clock ticks (10 ms), so measure over many calls.
  double CpuSeconds() const {
    if (pid_ <= 0) return -1;
    std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // Fields after the command name (which may hold spaces), from field 3 on.
    const size_t paren = text.rfind(')');
    if (paren == std::string::npos) return -1;
    const std::vector<std::string> fields = absl::StrSplit(text.substr(paren + 2), ' ');
    double user = 0, system = 0;
    if (fields.size() < 13 || !absl::SimpleAtod(fields[11], &user) ||
        !absl::SimpleAtod(fields[12], &system)) {
      return -1;
    }
    return (user + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  // The server's resident memory (VmRSS) in MB (MiB: /proc's kB / 1024), or -1 if it is
  // not running or unreadable.
  double ResidentMb() const { return ProcStatusMb("VmRSS"); }
  // A memory line of /proc/<pid>/status in MB (MiB) as above, e.g. "VmHWM" (peak
  // resident), "RssAnon", "RssFile"; -1 if it is not running or unreadable.
  double ProcStatusMb(const std::string& field) const {
    if (pid_ <= 0) return -1;
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    const std::string prefix = field + ":";
    while (std::getline(status, line)) {
      double kb = 0;
      if (line.rfind(prefix, 0) == 0 &&
          absl::SimpleAtod(absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(prefix.size()), "kB")), &kb)) {
        return kb / 1024;
      }
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
  std::chrono::seconds start_timeout_{60};
  std::string version_, address_, admin_address_;
  std::unique_ptr<v1::Retrieval::Stub> retrieval_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_SERVER_PROCESS_H_
