// A deliberately misbehaving gRPC client for tests and benchmarks of hostile traffic:
// raw HTTP/2 over a plain TCP socket. It announces a stream window of 0 (so the server
// may send no response body) and never grants more, while it keeps the connection
// alive (it answers SETTINGS and PING, as a real peer does). Calls are sent whole as one
// DATA frame each (the message must fit in 16 KiB).
#ifndef TWOTOWER_TESTS_RAW_HTTP2_H_
#define TWOTOWER_TESTS_RAW_HTTP2_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>
#include <string>
#include <thread>

namespace twotower::testing {

class NonReadingHttp2Client {
 public:
  // Connects to 127.0.0.1:`port`; ok() says whether it did.
  explicit NonReadingHttp2Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      Close();
      return;
    }
    std::string hello = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // SETTINGS: ENABLE_PUSH = 0, INITIAL_WINDOW_SIZE = 0.
    std::string settings;
    AppendSetting(0x2, 0, &settings);
    AppendSetting(0x4, 0, &settings);
    AppendFrame(0x4, 0, 0, settings, &hello);
    ok_ = Send(hello);
    reader_ = std::thread([this] { Answer(); });
  }
  ~NonReadingHttp2Client() { Close(); }
  NonReadingHttp2Client(const NonReadingHttp2Client&) = delete;
  NonReadingHttp2Client& operator=(const NonReadingHttp2Client&) = delete;

  bool ok() const { return ok_; }

  // Starts a unary call of `path` (e.g. "/twotower.v1.Retrieval/BatchRetrieve") with the
  // serialized request `message`; its answer is never read.
  bool Call(const std::string& path, const std::string& message) {
    std::string block;
    for (const auto& [name, value] :
         {std::pair<std::string, std::string>{":method", "POST"},
          {":scheme", "http"},
          {":path", path},
          {":authority", "127.0.0.1"},
          {"content-type", "application/grpc"},
          {"te", "trailers"}}) {
      block.push_back(0);  // literal header field without indexing, new name
      AppendString(name, &block);
      AppendString(value, &block);
    }
    const uint32_t stream = next_stream_;
    next_stream_ += 2;
    std::string frames;
    AppendFrame(0x1, 0x4, stream, block, &frames);  // HEADERS, END_HEADERS
    std::string data(1, '\0');                      // gRPC message: not compressed
    for (int shift = 24; shift >= 0; shift -= 8) {
      data.push_back(static_cast<char>((message.size() >> shift) & 0xff));
    }
    data += message;
    AppendFrame(0x0, 0x1, stream, data, &frames);  // DATA, END_STREAM
    return Send(frames);
  }

  void Close() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ok_ = false;
  }

 private:
  static void AppendFrame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload,
                          std::string* out) {
    const uint32_t size = static_cast<uint32_t>(payload.size());
    out->push_back(static_cast<char>((size >> 16) & 0xff));
    out->push_back(static_cast<char>((size >> 8) & 0xff));
    out->push_back(static_cast<char>(size & 0xff));
    out->push_back(static_cast<char>(type));
    out->push_back(static_cast<char>(flags));
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((stream >> shift) & 0xff));
    *out += payload;
  }
  static void AppendSetting(uint16_t id, uint32_t value, std::string* out) {
    out->push_back(static_cast<char>(id >> 8));
    out->push_back(static_cast<char>(id & 0xff));
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
  // HPACK string literal without Huffman coding (length as a 7-bit prefix integer).
  static void AppendString(const std::string& text, std::string* out) {
    size_t size = text.size();
    if (size < 127) {
      out->push_back(static_cast<char>(size));
    } else {
      out->push_back(127);
      size -= 127;
      while (size >= 128) {
        out->push_back(static_cast<char>((size & 0x7f) | 0x80));
        size >>= 7;
      }
      out->push_back(static_cast<char>(size));
    }
    *out += text;
  }
  bool Send(const std::string& bytes) {
    std::lock_guard<std::mutex> lock(send_mu_);
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads the server's frames: acknowledges SETTINGS, answers PING; grants no window.
  void Answer() {
    std::string buffer;
    char chunk[65536];
    while (true) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return;
      buffer.append(chunk, static_cast<size_t>(n));
      while (buffer.size() >= 9) {
        const size_t size = (static_cast<uint8_t>(buffer[0]) << 16) |
                            (static_cast<uint8_t>(buffer[1]) << 8) | static_cast<uint8_t>(buffer[2]);
        if (buffer.size() < 9 + size) break;
        const uint8_t type = static_cast<uint8_t>(buffer[3]);
        const uint8_t flags = static_cast<uint8_t>(buffer[4]);
        std::string reply;
        if (type == 0x4 && (flags & 0x1) == 0) AppendFrame(0x4, 0x1, 0, "", &reply);
        if (type == 0x6 && (flags & 0x1) == 0) AppendFrame(0x6, 0x1, 0, buffer.substr(9, size), &reply);
        if (!reply.empty() && !Send(reply)) return;
        buffer.erase(0, 9 + size);
      }
    }
  }

  int fd_ = -1;
  bool ok_ = false;
  uint32_t next_stream_ = 1;
  std::mutex send_mu_;
  std::thread reader_;
};

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_RAW_HTTP2_H_
