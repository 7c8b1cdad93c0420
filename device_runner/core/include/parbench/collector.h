// Talking to the collector (docs/collector-api.md) through a small Transport interface:
// libcurl on Linux (curl_transport.h), NSURLSession in the iOS bridge.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace parbench {

struct HttpResponse {
  long status = 0;                            // 0: no response (connection refused, timeout, ...)
  std::string body;                           // raw bytes
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string error;                          // transport-level failure, when status == 0
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class Transport {
 public:
  virtual ~Transport() = default;
  // One HTTP exchange. Must not throw for network failures: report them with status 0.
  virtual HttpResponse send(const std::string& method, const std::string& url, const Headers& headers,
                            const std::string& body) = 0;
  // GET into the file dest_path. On a 2xx answer the bytes are in dest_path and the returned
  // body is empty; otherwise dest_path is left alone and the body holds the error. The default
  // goes through send(); transports that can stream to disk override it.
  virtual HttpResponse download(const std::string& url, const Headers& headers, const std::string& dest_path);
};

struct RetryPolicy {
  int attempts = 6;          // tries per request, the first included
  int base_delay_ms = 250;   // doubles each retry
  int max_delay_ms = 8000;
};

// True for answers a retry of the same request may fix: no response, 408, 425, 429, 502, 503, 504.
// Not 500 or 507: the collector answers those for store faults it cannot recover from.
bool is_retryable(const HttpResponse& r);

// The wait a Retry-After header in seconds asks for, in milliseconds (none for a date or no header).
std::optional<int> retry_after_ms(const HttpResponse& r);

// Percent-encodes each segment of a manifest-relative path, keeping '/'.
std::string encode_path(const std::string& rel_path);

class CollectorClient {
 public:
  CollectorClient(Transport& transport, std::string base_url, std::string token, RetryPolicy policy = {},
                  std::function<void(int)> sleep_ms = {});

  nlohmann::json health();
  // The manifest bytes as served; its sha256 is recorded in the run.
  std::string manifest();
  // One fixture file by manifest-relative path (full response: body plus headers).
  HttpResponse file(const std::string& rel_path);
  // The same, written to dest_path (the response's headers come back, its body stays empty).
  HttpResponse download(const std::string& rel_path, const std::string& dest_path);
  // PUT /runs/{id}: 200/201 both fine; 409 (same id, other content) throws.
  nlohmann::json put_run(const std::string& run_id, const nlohmann::json& run);
  // POST /runs/{id}/results; a retry of the same batch is harmless (the collector dedupes).
  nlohmann::json post_results(const std::string& run_id, const nlohmann::json& results);
  nlohmann::json complete(const std::string& run_id, const nlohmann::json& body);

  const std::string& base_url() const { return base_; }
  int retries_used() const { return retries_; }

 private:
  // Sends with retries; throws CollectorError with the collector's reason when it gives up.
  HttpResponse call(const std::string& method, const std::string& path, const std::string& body, bool auth,
                    const std::string& what);
  HttpResponse with_retries(const std::function<HttpResponse()>& once, const std::string& method,
                            const std::string& url, const std::string& what);
  Headers request_headers(bool auth, bool has_body) const;
  nlohmann::json call_json(const std::string& method, const std::string& path, const nlohmann::json* body,
                           const std::string& what);

  Transport& transport_;
  std::string base_;
  std::string token_;
  RetryPolicy policy_;
  std::function<void(int)> sleep_ms_;
  int retries_ = 0;
};

}  // namespace parbench
