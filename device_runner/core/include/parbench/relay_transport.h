// USB mode: the device listens on its own loopback and the host dials in (through usbmux:
// iproxy on the Mac), then relays each exchange to the collector over HTTP.
//
// Protocol, version 1, over that one TCP connection:
//   device -> host   "PBRELAY1"                               on every accepted connection
//   device -> host   request frame:  u32 n | n bytes of JSON {"method", "path", "headers": [[k, v], ...]}
//                                    | u64 m | m bytes of body
//   host -> device   response frame: u32 n | n bytes of JSON {"status", "headers": {k: v}, "error"}
//                                    | u64 m | m bytes of body
// Integers are big-endian. "path" is the request's path and query ("/api/v1/health"); the host
// sends it to its collector. status 0 with "error" means the host could not reach the collector.
// A connection that drops is accepted again on the next exchange (the host keeps dialling).
#pragma once

#include <string>

#include "parbench/collector.h"

namespace parbench {

constexpr const char* kRelayGreeting = "PBRELAY1";

class RelayListenerTransport : public Transport {
 public:
  // Listens on 127.0.0.1:port (0: any free port, see port()). accept_timeout_s bounds the wait
  // for the host's relay; io_timeout_s bounds each read or write once connected.
  explicit RelayListenerTransport(int port, double accept_timeout_s = 60, double io_timeout_s = 300);
  ~RelayListenerTransport() override;
  RelayListenerTransport(const RelayListenerTransport&) = delete;
  RelayListenerTransport& operator=(const RelayListenerTransport&) = delete;

  HttpResponse send(const std::string& method, const std::string& url, const Headers& headers,
                    const std::string& body) override;
  // Streams the body to dest_path instead of holding it in memory.
  HttpResponse download(const std::string& url, const Headers& headers, const std::string& dest_path) override;

  int port() const { return port_; }
  void set_accept_timeout(double seconds) { accept_timeout_s_ = seconds; }

 private:
  HttpResponse exchange(const std::string& method, const std::string& url, const Headers& headers,
                        const std::string& body, const std::string* dest_path);
  bool ensure_connected(std::string& error);
  void drop_connection();

  int listen_fd_ = -1;
  int conn_fd_ = -1;
  int port_ = 0;
  double accept_timeout_s_;
  double io_timeout_s_;
};

// "/api/v1/health" from "http://host:port/api/v1/health" (the path and query of a URL).
std::string url_path(const std::string& url);

}  // namespace parbench
