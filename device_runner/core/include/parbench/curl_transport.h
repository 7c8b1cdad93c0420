// libcurl implementation of Transport (Linux and other non-Apple hosts).
#pragma once

#include "parbench/collector.h"

namespace parbench {

class CurlTransport : public Transport {
 public:
  // timeout_s bounds one whole exchange (artifacts can be tens of MB on a slow link).
  explicit CurlTransport(long timeout_s = 300, long connect_timeout_s = 10);
  ~CurlTransport() override;
  CurlTransport(const CurlTransport&) = delete;
  CurlTransport& operator=(const CurlTransport&) = delete;

  HttpResponse send(const std::string& method, const std::string& url, const Headers& headers,
                    const std::string& body) override;

 private:
  void* handle_;  // CURL*, reused so connections are kept alive
  long timeout_s_;
  long connect_timeout_s_;
};

}  // namespace parbench
