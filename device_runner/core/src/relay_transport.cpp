#include "parbench/relay_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/errors.h"

namespace parbench {

namespace {

using nlohmann::json;

#if defined(MSG_NOSIGNAL)
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;  // Apple platforms: SO_NOSIGPIPE is set on the socket instead
#endif

struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int timeout_ms(double seconds) { return seconds <= 0 ? -1 : static_cast<int>(seconds * 1000); }

void wait_for(int fd, short events, double timeout_s, const char* what) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, timeout_ms(timeout_s));
    if (n > 0) return;
    if (n == 0) throw IoError(std::string("timed out ") + what);
    if (errno != EINTR) throw IoError(std::string(what) + ": " + std::strerror(errno));
  }
}

void write_all(int fd, const void* data, std::size_t size, double timeout_s) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    wait_for(fd, POLLOUT, timeout_s, "writing to the relay");
    const ssize_t n = ::send(fd, p, size, kSendFlags);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw IoError(std::string("writing to the relay: ") + std::strerror(errno));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void read_all(int fd, void* data, std::size_t size, double timeout_s) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    wait_for(fd, POLLIN, timeout_s, "reading from the relay");
    const ssize_t n = ::recv(fd, p, size, 0);
    if (n == 0) throw IoError("the relay closed the connection");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw IoError(std::string("reading from the relay: ") + std::strerror(errno));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFF));
}

void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFF));
}

uint64_t get_be(const unsigned char* b, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | b[i];
  return v;
}

constexpr uint32_t kMaxHeaderBytes = 1 << 20;

}  // namespace

std::string url_path(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url.empty() || url[0] != '/' ? "/" + url : url;
  const auto slash = url.find('/', scheme + 3);
  return slash == std::string::npos ? "/" : url.substr(slash);
}

RelayListenerTransport::RelayListenerTransport(int port, double accept_timeout_s, double io_timeout_s)
    : accept_timeout_s_(accept_timeout_s), io_timeout_s_(io_timeout_s) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw CollectorError(std::string("USB mode: socket() failed: ") + std::strerror(errno), 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(listen_fd_, 4) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    throw CollectorError("USB mode: cannot listen on 127.0.0.1:" + std::to_string(port) + " (" + why +
                             "); pick another port (PARBENCH_USB_PORT) and give the same one to the relay",
                         0);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
}

RelayListenerTransport::~RelayListenerTransport() {
  drop_connection();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void RelayListenerTransport::drop_connection() {
  if (conn_fd_ >= 0) ::close(conn_fd_);
  conn_fd_ = -1;
}

bool RelayListenerTransport::ensure_connected(std::string& error) {
  if (conn_fd_ >= 0) return true;
  try {
    wait_for(listen_fd_, POLLIN, accept_timeout_s_, "waiting for the relay");
  } catch (const IoError&) {
    error = "no relay connected to 127.0.0.1:" + std::to_string(port_) + " on this device within " +
            std::to_string(static_cast<int>(accept_timeout_s_)) +
            " s; on the Mac run `parbench device relay --udid UDID --device-port " + std::to_string(port_) +
            " --collector URL` (it needs iproxy from libimobiledevice and the device on USB)";
    return false;
  }
  const int fd = ::accept(listen_fd_, nullptr, nullptr);
  if (fd < 0) {
    error = std::string("accepting the relay's connection failed: ") + std::strerror(errno);
    return false;
  }
#if defined(SO_NOSIGPIPE)
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
  conn_fd_ = fd;
  try {
    write_all(conn_fd_, kRelayGreeting, std::strlen(kRelayGreeting), io_timeout_s_);
  } catch (const IoError& e) {
    drop_connection();
    error = e.what();
    return false;
  }
  return true;
}

HttpResponse RelayListenerTransport::send(const std::string& method, const std::string& url, const Headers& headers,
                                          const std::string& body) {
  return exchange(method, url, headers, body, nullptr);
}

HttpResponse RelayListenerTransport::download(const std::string& url, const Headers& headers,
                                              const std::string& dest_path) {
  return exchange("GET", url, headers, "", &dest_path);
}

HttpResponse RelayListenerTransport::exchange(const std::string& method, const std::string& url,
                                              const Headers& headers, const std::string& body,
                                              const std::string* dest_path) {
  HttpResponse out;
  if (!ensure_connected(out.error)) return out;
  try {
    json head = {{"method", method}, {"path", url_path(url)}, {"headers", json::array()}};
    for (const auto& [name, value] : headers) head["headers"].push_back({name, value});
    const std::string head_text = head.dump();
    std::string frame;
    put_u32(frame, static_cast<uint32_t>(head_text.size()));
    frame += head_text;
    put_u64(frame, body.size());
    write_all(conn_fd_, frame.data(), frame.size(), io_timeout_s_);
    if (!body.empty()) write_all(conn_fd_, body.data(), body.size(), io_timeout_s_);

    unsigned char len4[4];
    read_all(conn_fd_, len4, 4, io_timeout_s_);
    const auto head_len = static_cast<uint32_t>(get_be(len4, 4));
    if (head_len == 0 || head_len > kMaxHeaderBytes) throw IoError("the relay sent a malformed frame");
    std::string reply_text(head_len, '\0');
    read_all(conn_fd_, reply_text.data(), head_len, io_timeout_s_);
    unsigned char len8[8];
    read_all(conn_fd_, len8, 8, io_timeout_s_);
    const uint64_t body_len = get_be(len8, 8);
    const json reply = json::parse(reply_text);
    out.status = reply.value("status", 0L);
    if (reply.contains("error") && reply["error"].is_string()) out.error = reply["error"].get<std::string>();
    if (reply.contains("headers") && reply["headers"].is_object()) {
      for (const auto& [name, value] : reply["headers"].items()) {
        std::string lower = name;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[lower] = value.is_string() ? value.get<std::string>() : value.dump();
      }
    }
    const bool to_file = dest_path != nullptr && out.status >= 200 && out.status < 300;
    std::vector<char> chunk(1 << 16);
    std::ofstream file;
    if (to_file) {
      const std::filesystem::path dest(*dest_path);
      if (dest.has_parent_path()) std::filesystem::create_directories(dest.parent_path());
      file.open(dest, std::ios::binary | std::ios::trunc);
      if (!file) throw FixtureError("cannot write " + *dest_path + " (is the folder writable?)");
    }
    for (uint64_t left = body_len; left > 0;) {
      const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(left, chunk.size()));
      read_all(conn_fd_, chunk.data(), n, io_timeout_s_);
      if (to_file) {
        file.write(chunk.data(), static_cast<std::streamsize>(n));
        if (!file) throw FixtureError("short write on " + *dest_path + " (disk full?)");
      } else {
        out.body.append(chunk.data(), n);
      }
      left -= n;
    }
    if (out.status == 0 && out.error.empty()) out.error = "the relay could not reach the collector";
  } catch (const IoError& e) {
    drop_connection();
    HttpResponse failed;
    failed.error = std::string("USB relay: ") + e.what();
    return failed;
  } catch (const json::exception& e) {
    drop_connection();
    HttpResponse failed;
    failed.error = std::string("USB relay: malformed response header (") + e.what() + ")";
    return failed;
  }
  return out;
}

}  // namespace parbench
