#include "parbench/collector.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "parbench/errors.h"

namespace parbench {

using nlohmann::json;

namespace {
constexpr const char* kApi = "/api/v1";

std::string reason_of(const HttpResponse& r) {
  if (r.status == 0) return r.error.empty() ? "no response" : r.error;
  try {
    const json body = json::parse(r.body);
    if (body.is_object() && body.contains("reason") && body.at("reason").is_string()) {
      return body.at("error").is_string() ? body.at("error").get<std::string>() + ": " + body.at("reason").get<std::string>()
                                          : body.at("reason").get<std::string>();
    }
  } catch (const json::exception&) {
  }
  std::string text = r.body.substr(0, 300);
  return text.empty() ? "(empty body)" : text;
}
}  // namespace

HttpResponse Transport::download(const std::string& url, const Headers& headers, const std::string& dest_path) {
  HttpResponse r = send("GET", url, headers, "");
  if (r.status < 200 || r.status >= 300) return r;
  namespace fs = std::filesystem;
  const fs::path dest(dest_path);
  if (dest.has_parent_path()) fs::create_directories(dest.parent_path());
  std::ofstream out(dest, std::ios::binary | std::ios::trunc);
  out.write(r.body.data(), static_cast<std::streamsize>(r.body.size()));
  if (!out) throw FixtureError("cannot write " + dest_path + " (is the folder writable, the disk full?)");
  r.body.clear();
  return r;
}

bool is_retryable(const HttpResponse& r) {
  switch (r.status) {
    case 0:    // no response
    case 408:  // request timeout
    case 425:  // too early
    case 429:  // too many requests
    case 502:  // bad gateway, gateway timeout: a proxy in front of a collector that is down
    case 503:  // the collector's "busy": its store stays locked for a moment
    case 504:
      return true;
    default:  // 500, 507 and the rest: a fault the same request will meet again
      return false;
  }
}

std::optional<int> retry_after_ms(const HttpResponse& r) {
  const auto it = r.headers.find("retry-after");
  if (it == r.headers.end()) return std::nullopt;
  const std::string& v = it->second;
  if (v.empty() || v.size() > 6 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;  // an HTTP date or garbage: the client's own back-off applies
  }
  return std::stoi(v) * 1000;
}

std::string encode_path(const std::string& rel_path) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : rel_path) {
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_' || c == '.' || c == '~' || c == '/';
    if (keep) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

CollectorClient::CollectorClient(Transport& transport, std::string base_url, std::string token, RetryPolicy policy,
                                 std::function<void(int)> sleep_ms)
    : transport_(transport), base_(std::move(base_url)), token_(std::move(token)), policy_(policy),
      sleep_ms_(std::move(sleep_ms)) {
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  if (base_.rfind("http://", 0) != 0 && base_.rfind("https://", 0) != 0) {
    throw CollectorError("collector URL '" + base_ + "' must start with http:// or https://", 0);
  }
  if (!sleep_ms_) sleep_ms_ = [](int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
  policy_.attempts = std::max(1, policy_.attempts);
}

Headers CollectorClient::request_headers(bool auth, bool has_body) const {
  Headers headers;
  if (auth) headers.emplace_back("Authorization", "Bearer " + token_);
  if (has_body) headers.emplace_back("Content-Type", "application/json");
  headers.emplace_back("Accept", "application/json, application/octet-stream");
  return headers;
}

HttpResponse CollectorClient::with_retries(const std::function<HttpResponse()>& once, const std::string& method,
                                           const std::string& url, const std::string& what) {
  HttpResponse r;
  int delay = policy_.base_delay_ms;
  for (int attempt = 1; attempt <= policy_.attempts; ++attempt) {
    r = once();
    if (r.status >= 200 && r.status < 300) return r;
    if (!is_retryable(r) || attempt == policy_.attempts) break;
    ++retries_;
    const std::optional<int> asked = retry_after_ms(r);
    sleep_ms_(asked ? std::min(*asked, policy_.max_delay_ms) : delay);
    delay = std::min(delay * 2, policy_.max_delay_ms);
  }
  std::string hint;
  if (r.status == 401) hint = "; check the token (parbench serve prints it at start)";
  if (r.status == 0) hint = "; is the collector running and reachable at " + base_ + "?";
  if (r.status >= 500 && !is_retryable(r)) hint = "; not retried: the collector's operator must fix it first";
  throw CollectorError(what + " failed (" + method + " " + url + " -> " +
                           (r.status ? "HTTP " + std::to_string(r.status) : std::string("no response")) +
                           "): " + reason_of(r) + hint,
                       r.status);
}

HttpResponse CollectorClient::call(const std::string& method, const std::string& path, const std::string& body,
                                   bool auth, const std::string& what) {
  const Headers headers = request_headers(auth, !body.empty());
  const std::string url = base_ + kApi + path;
  return with_retries([&] { return transport_.send(method, url, headers, body); }, method, url, what);
}

json CollectorClient::call_json(const std::string& method, const std::string& path, const json* body,
                                const std::string& what) {
  const HttpResponse r = call(method, path, body ? body->dump() : std::string(), true, what);
  try {
    return r.body.empty() ? json::object() : json::parse(r.body);
  } catch (const json::parse_error&) {
    throw CollectorError(what + ": the collector answered with something that is not JSON", r.status);
  }
}

json CollectorClient::health() {
  const HttpResponse r = call("GET", "/health", "", false, "health check");
  try {
    return json::parse(r.body);
  } catch (const json::parse_error&) {
    throw CollectorError("health check: " + base_ + " answered, but not with parbench's health JSON", r.status);
  }
}

std::string CollectorClient::manifest() { return call("GET", "/fixtures/manifest", "", true, "manifest download").body; }

HttpResponse CollectorClient::file(const std::string& rel_path) {
  return call("GET", "/fixtures/files/" + encode_path(rel_path), "", true, "download of " + rel_path);
}

HttpResponse CollectorClient::download(const std::string& rel_path, const std::string& dest_path) {
  const Headers headers = request_headers(true, false);
  const std::string url = base_ + kApi + "/fixtures/files/" + encode_path(rel_path);
  return with_retries([&] { return transport_.download(url, headers, dest_path); }, "GET", url,
                      "download of " + rel_path);
}

json CollectorClient::put_run(const std::string& run_id, const json& run) {
  return call_json("PUT", "/runs/" + encode_path(run_id), &run, "creating run " + run_id);
}

json CollectorClient::post_results(const std::string& run_id, const json& results) {
  const json body = {{"results", results}};
  return call_json("POST", "/runs/" + encode_path(run_id) + "/results", &body, "posting results of run " + run_id);
}

json CollectorClient::complete(const std::string& run_id, const json& body) {
  return call_json("POST", "/runs/" + encode_path(run_id) + "/complete", &body, "completing run " + run_id);
}

}  // namespace parbench
