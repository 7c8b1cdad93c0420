// NSURLSession implementation of the core's Transport interface (Objective-C++ only).
#pragma once

#include "parbench/collector.h"

#ifdef __OBJC__
@class NSURLSession;
#else
typedef struct objc_object NSURLSession;
#endif

namespace parbench {

class URLSessionTransport : public Transport {
 public:
  // timeout_s bounds each request (and each whole download).
  explicit URLSessionTransport(double timeout_s = 300);
  ~URLSessionTransport() override;
  // Blocks until the exchange ends; network failures come back with status 0.
  HttpResponse send(const std::string& method, const std::string& url, const Headers& headers,
                    const std::string& body) override;
  // A download task: the file goes straight to dest_path, never through memory.
  HttpResponse download(const std::string& url, const Headers& headers, const std::string& dest_path) override;

 private:
  NSURLSession* session_;
  double timeout_s_;
};

}  // namespace parbench
