// Unit tests of the core (no model runtime needed). `parbench-core-tests GROUP` runs the tests
// whose name starts with GROUP; ctest runs one process per group.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "parbench/collector.h"
#include "parbench/errors.h"
#include "parbench/fixtures.h"
#include "parbench/manifest.h"
#include "parbench/metrics.h"
#include "parbench/relay_transport.h"
#include "parbench/replay.h"
#include "parbench/sha256.h"
#include "parbench/tensor.h"

using nlohmann::json;
using namespace parbench;
namespace fs = std::filesystem;

namespace {

struct TestCase {
  std::string name;
  std::function<void()> fn;
};
std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
#define TEST(name)                                    \
  static void test_##name();                          \
  static Register register_##name(#name, test_##name); \
  static void test_##name()

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (!(cond)) throw Failure(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #cond); \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                           \
  do {                                                                                                  \
    const double va = (a), vb = (b);                                                                    \
    if (!(std::fabs(va - vb) <= (tol) * std::max(1.0, std::fabs(vb)))) {                               \
      throw Failure(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #a " = " +            \
                    std::to_string(va) + ", expected " + std::to_string(vb));                           \
    }                                                                                                   \
  } while (0)

// Runs `fn`, which must throw E with a message containing every `needle`.
template <typename E>
void check_throws(const std::function<void()>& fn, const std::vector<std::string>& needles, int line) {
  try {
    fn();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) {
      if (msg.find(n) == std::string::npos) {
        throw Failure("line " + std::to_string(line) + ": message '" + msg + "' lacks '" + n + "'");
      }
    }
    return;
  }
  throw Failure("line " + std::to_string(line) + ": expected an exception");
}
#define CHECK_THROWS(E, stmt, ...) check_throws<E>([&] { stmt; }, {__VA_ARGS__}, __LINE__)

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("parbench-core-tests-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_file(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string floats_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A one-model fixture set written to disk: identity-like model, 2 cases (sizes 16 and 32).
struct MiniSet {
  fs::path dir;
  json manifest;
};

MiniSet make_set(const std::string& name) {
  MiniSet s;
  s.dir = temp_dir(name);
  json tensors = json::object();
  json cases = json::array();
  for (int size : {16, 32}) {
    std::vector<float> in(static_cast<std::size_t>(size));
    for (int i = 0; i < size; ++i) in[i] = 0.25f * static_cast<float>(i) - 1.0f;
    std::vector<float> golden = in;
    golden[0] += 0.5f;  // the "model" (identity) then differs from golden by 0.5 at one element
    const std::string in_rel = "tensors/ident/" + std::to_string(size) + "-0.input.x.bin";
    const std::string out_rel = "tensors/ident/" + std::to_string(size) + "-0.golden.output.bin";
    write_file(s.dir / in_rel, floats_bytes(in));
    write_file(s.dir / out_rel, floats_bytes(golden));
    tensors[in_rel] = {{"dtype", "float32"}, {"shape", {1, size}}, {"sha256", sha256_hex(floats_bytes(in))}};
    tensors[out_rel] = {{"dtype", "float32"}, {"shape", {1, size}}, {"sha256", sha256_hex(floats_bytes(golden))}};
    cases.push_back({{"id", "ident/" + std::to_string(size) + "/0"},
                     {"size", size},
                     {"inputs", {{"x", in_rel}}},
                     {"golden", {{"output", out_rel}}}});
  }
  write_file(s.dir / "artifacts/ident/lite.fake", "fake model");
  write_file(s.dir / "artifacts/ident/onnx.onnx", "onnx bytes");
  s.manifest = {
      {"format", "parbench-fixtures"},
      {"format_version", 1},
      {"created_utc", "2026-11-23T12:00:00Z"},
      {"tensors", tensors},
      {"models",
       {{"ident",
         {{"task", "classification"},
          {"example_size", 16},
          {"inputs", {{{"name", "x"}, {"shape", {1, "size"}}, {"dtype", "float32"}}}},
          {"outputs", {"output"}},
          {"artifacts",
           {{"lite", {{{"path", "artifacts/ident/lite.fake"}, {"format", "fake"}, {"sha256", sha256_hex("fake model")},
                       {"bytes", 10}, {"sizes", nullptr}, {"meta", json::object()}}}},
            {"onnx", {{{"path", "artifacts/ident/onnx.onnx"}, {"format", "onnx"}, {"sha256", sha256_hex("onnx bytes")},
                       {"bytes", 10}, {"sizes", {16}}, {"meta", json::object()}}}}}},
          {"cases", cases}}}}},
  };
  write_file(s.dir / "manifest.json", s.manifest.dump(1));
  return s;
}

// A runner that returns its input as "output".
class IdentityRunner : public ModelRunner {
 public:
  std::string executor() const override { return "identity"; }
  void load(const LocalFile& f) override { loaded = f.path; }
  void set_inputs(const NamedTensors& inputs) override { in_ = inputs; }
  void run() override { ++runs; }
  NamedTensors outputs() override { return {{"output", in_.at(0).second}}; }
  std::string loaded;
  int runs = 0;

 private:
  NamedTensors in_;
};

// Compiles before loading, as Core ML does; checks it gets the manifest's names.
class CompilingRunner : public IdentityRunner {
 public:
  explicit CompilingRunner(const RunnerOptions& o) : opts(o) {}
  std::string executor() const override { return "compiling"; }
  bool compile(const LocalFile&) override {
    if (opts.output_names != std::vector<std::string>{"output"} || opts.input_names != std::vector<std::string>{"x"}) {
      throw RunnerError("names not passed to the runner");
    }
    return true;
  }
  RunnerOptions opts;
};

// Prepares, compiles once per artifact path across instances, and reports details, as the Core ML runner does.
class CachingRunner : public IdentityRunner {
 public:
  explicit CachingRunner(std::vector<std::string>& log) : log_(log) {}
  std::string executor() const override { return "caching"; }
  void prepare(const LocalFile& f) override { log_.push_back("prepare " + f.path); }
  bool compile(const LocalFile& f) override {
    for (const auto& line : log_) {
      if (line == "compile " + f.path) return false;
    }
    log_.push_back("compile " + f.path);
    return true;
  }
  json details() const override { return {{"threads_used", 3}}; }

 private:
  std::vector<std::string>& log_;
};

RunnerRegistry fake_registry() {
  RunnerRegistry reg;
  reg.add("fake", {[](const RunnerOptions&) { return std::make_unique<IdentityRunner>(); }, {}});
  return reg;
}

// Scripted transport: answers from a queue and records every request.
class FakeTransport : public Transport {
 public:
  struct Call {
    std::string method, url, body;
    Headers headers;
  };
  std::vector<HttpResponse> script;
  std::vector<Call> calls;
  HttpResponse send(const std::string& method, const std::string& url, const Headers& headers,
                    const std::string& body) override {
    calls.push_back({method, url, body, headers});
    if (script.empty()) return HttpResponse{200, "{}", {}, ""};
    HttpResponse r = script.front();
    script.erase(script.begin());
    return r;
  }
};

bool has_header(const FakeTransport::Call& c, const std::string& name, const std::string& value) {
  for (const auto& [n, v] : c.headers) {
    if (n == name && v == value) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST(tensor_half_to_float) {
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x7BFF) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x0200) == std::ldexp(1.0f, -15));  // a larger subnormal
  CHECK(std::isinf(half_to_float(0x7C00)));
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(std::signbit(half_to_float(0x8000)));
}

TEST(tensor_read_checks_size) {
  const fs::path d = temp_dir("tensor");
  write_file(d / "t.bin", floats_bytes({1.0f, 2.0f, 3.0f}));
  const Tensor t = read_tensor_file((d / "t.bin").string(), DType::Float32, {1, 3});
  CHECK(t.numel() == 3);
  CHECK(t.to_double()[2] == 3.0);
  CHECK_THROWS(FixtureError, read_tensor_file((d / "t.bin").string(), DType::Float32, {2, 3}), "has 12 bytes",
               "needs 24");
  CHECK_THROWS(FixtureError, parse_dtype("float64"), "unknown dtype 'float64'");
  const std::vector<int64_t> ints = {-3, 7};
  write_file(d / "i.bin", std::string(reinterpret_cast<const char*>(ints.data()), 16));
  CHECK(read_tensor_file((d / "i.bin").string(), DType::Int64, {2}).to_double()[0] == -3.0);
}

TEST(sha256_known_vectors) {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const fs::path d = temp_dir("sha");
  std::string big(3 * 1024 * 1024 + 17, 'x');  // spans several read chunks
  write_file(d / "big.bin", big);
  CHECK(sha256_file((d / "big.bin").string()) == sha256_hex(big));
  CHECK_THROWS(FixtureError, sha256_file((d / "missing.bin").string()), "cannot read");
}

TEST(sha256_local_fixtures_refuse_mismatch) {
  MiniSet s = make_set("refuse");
  LocalFixtures src(s.dir.string());
  const std::string rel = "tensors/ident/16-0.input.x.bin";
  const std::string good = s.manifest["tensors"][rel]["sha256"];
  CHECK(src.fetch(rel, good).path == (s.dir / rel).string());
  LocalFixtures fresh(s.dir.string());
  write_file(s.dir / rel, floats_bytes({9.0f}));  // corrupt it
  CHECK_THROWS(HashMismatch, fresh.fetch(rel, good), "refused tensors/ident/16-0.input.x.bin", good);
  CHECK_THROWS(FixtureError, fresh.fetch("../etc/passwd", good), "stay inside");
  CHECK_THROWS(FixtureError, fresh.fetch("tensors/nope.bin", good), "lacks tensors/nope.bin");
}

TEST(manifest_parses) {
  MiniSet s = make_set("parse");
  const Manifest m = Manifest::parse(s.manifest.dump());
  CHECK(m.format_version == 1);
  CHECK(m.models.size() == 1);
  const ModelEntry& model = m.models[0];
  CHECK(model.name == "ident");
  CHECK(model.cases.size() == 2);
  CHECK(model.cases[1].size == 32);
  CHECK(model.cases[0].inputs.at(0).first == "x");
  CHECK(model.artifact_for("lite", 32) != nullptr);
  CHECK(model.artifact_for("onnx", 16) != nullptr);
  CHECK(model.artifact_for("onnx", 32) == nullptr);
  CHECK(m.tensor("tensors/ident/32-0.golden.output.bin").shape == std::vector<int64_t>({1, 32}));
}

TEST(manifest_refuses_unknown_version) {
  MiniSet s = make_set("version");
  s.manifest["format_version"] = 2;
  CHECK_THROWS(FixtureError, Manifest::parse(s.manifest.dump()), "format_version 2", "reads format_version 1");
  s.manifest["format_version"] = "1";
  CHECK_THROWS(FixtureError, Manifest::parse(s.manifest.dump()), "must be an integer");
}

TEST(manifest_refuses_bad_content) {
  MiniSet s = make_set("bad");
  CHECK_THROWS(FixtureError, Manifest::parse("{not json"), "not valid JSON");
  json other = s.manifest;
  other["format"] = "something-else";
  CHECK_THROWS(FixtureError, Manifest::parse(other.dump()), "not a parbench fixture set");
  json no_tensors = s.manifest;
  no_tensors.erase("tensors");
  CHECK_THROWS(FixtureError, Manifest::parse(no_tensors.dump()), "no 'tensors' field");
  json escape = s.manifest;
  escape["models"]["ident"]["artifacts"]["lite"][0]["path"] = "../outside.ptl";
  CHECK_THROWS(FixtureError, Manifest::parse(escape.dump()), "'../outside.ptl'", "stay inside");
  json bad_dtype = s.manifest;
  bad_dtype["tensors"]["tensors/ident/16-0.input.x.bin"]["dtype"] = "complex64";
  CHECK_THROWS(FixtureError, Manifest::parse(bad_dtype.dump()), "complex64");
  json unlisted = s.manifest;
  unlisted["models"]["ident"]["cases"][0]["golden"]["output"] = "tensors/ident/ghost.bin";
  CHECK_THROWS(FixtureError, Manifest::parse(unlisted.dump()), "tensors/ident/ghost.bin", "not listed");
  json missing_input = s.manifest;
  missing_input["models"]["ident"]["cases"][0]["inputs"] = json::object();
  CHECK_THROWS(FixtureError, Manifest::parse(missing_input.dump()), "no path for 'x'");
}

TEST(metrics_hand_computed) {
  const json m = output_metrics({1, 2, 3}, {1, 2, 4}, {3}, "image-to-image");
  CHECK_NEAR(m["max_abs"].get<double>(), 1.0, 1e-15);
  CHECK_NEAR(m["mean_abs"].get<double>(), 1.0 / 3.0, 1e-15);
  CHECK_NEAR(m["rel_l2"].get<double>(), 1.0 / std::sqrt(21.0), 1e-15);
  CHECK_NEAR(m["cosine"].get<double>(), 17.0 / (std::sqrt(14.0) * std::sqrt(21.0)), 1e-15);
  CHECK_NEAR(m["snr_db"].get<double>(), 10.0 * std::log10(21.0), 1e-13);
  CHECK_NEAR(m["psnr_db"].get<double>(), 20.0 * std::log10(3.0) - 10.0 * std::log10(1.0 / 3.0), 1e-13);
  CHECK(!m.contains("top1_agree"));
  // PSNR belongs to the image task only, as on the host
  CHECK(!output_metrics({1, 2, 3}, {1, 2, 4}, {3}, "classification").contains("psnr_db"));
}

TEST(metrics_edges) {
  const json same = output_metrics({1, -2, 3}, {1, -2, 3}, {3}, "image-to-image");
  CHECK(same["max_abs"].get<double>() == 0.0);
  CHECK(same["snr_db"].get<double>() == kDbCap);
  CHECK(same["psnr_db"].get<double>() == kDbCap);
  CHECK_NEAR(same["cosine"].get<double>(), 1.0, 1e-15);
  const json zeros = output_metrics({0, 0}, {0, 0}, {2}, "");
  CHECK(zeros["cosine"].get<double>() == 1.0);
  CHECK(zeros["rel_l2"].get<double>() == 0.0);
  const json zero_ref = output_metrics({1, 0}, {0, 0}, {2}, "image-to-image");
  CHECK(zero_ref["cosine"].get<double>() == 0.0);
  CHECK_NEAR(zero_ref["snr_db"].get<double>(), -3000.0, 1e-12);  // 10 log10(1e-300 / 1)
  CHECK_NEAR(zero_ref["rel_l2"].get<double>(), 1e12, 1e-12);     // ||a-r|| / 1e-12
  CHECK_NEAR(zero_ref["psnr_db"].get<double>(), -10.0 * std::log10(0.5), 1e-13);  // peak 1
  const json nan = output_metrics({std::nan(""), 1}, {1, 1}, {2}, "");
  CHECK(nan["max_abs"].is_null());
  CHECK(nan["mean_abs"].is_null());
  CHECK_THROWS(std::invalid_argument, output_metrics({1}, {1, 2}, {2}, ""), "1 elements");
  const json tiny = output_metrics({1.0, 2.0 + 1e-13}, {1.0, 2.0}, {2}, "image-to-image");
  CHECK(tiny["psnr_db"].get<double>() == kDbCap);  // would exceed the cap
}

TEST(metrics_classification) {
  // 2 rows x 6 classes. Row 0: same top-1, top-5 differ by one class. Row 1: top-1 differs.
  const std::vector<double> r = {0.9, 0.8, 0.7, 0.6, 0.5, 0.1, /**/ 0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
  const std::vector<double> a = {0.9, 0.8, 0.7, 0.6, 0.0, 0.5, /**/ 0.1, 0.2, 0.3, 0.4, 0.7, 0.6};
  const json m = output_metrics(a, r, {2, 6}, "classification");
  CHECK_NEAR(m["top1_agree"].get<double>(), 0.5, 1e-15);
  CHECK_NEAR(m["top5_overlap"].get<double>(), (4.0 / 5.0 + 5.0 / 5.0) / 2.0, 1e-15);
  // fewer than 5 classes: k = C
  CHECK(output_metrics({3, 2, 1}, {1, 2, 3}, {1, 3}, "classification")["top5_overlap"].get<double>() == 1.0);
  CHECK(!output_metrics({1, 2}, {1, 2}, {2, 1}, "classification").contains("top1_agree"));  // C == 1
  Tensor t;
  t.shape = {2, 6};
  t.data.resize(48);
  Tensor u = t;
  u.shape = {12};
  CHECK_THROWS(RunnerError, compare_tensors(t, u, "classification"), "[2, 6]", "[12]");
  CHECK(compare_tensors(t, t, "classification").contains("top1_agree"));
  CHECK(!compare_tensors(t, t, "segmentation").contains("top1_agree"));
  Tensor bad = t;
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(bad.data.data(), &inf, 4);
  CHECK_THROWS(RunnerError, compare_tensors(bad, t, "classification"), "1 of 12 candidate values are NaN/inf");
}

TEST(metrics_segmentation_and_detection) {
  // [1, 2, 1, 3]: channel scores per pixel; masks r = [0, 1, 1], a = [0, 0, 1]
  const std::vector<double> r = {0.9, 0.1, 0.2, /**/ 0.1, 0.9, 0.8};
  const std::vector<double> a = {0.9, 0.6, 0.2, /**/ 0.1, 0.5, 0.8};
  const json s = output_metrics(a, r, {1, 2, 1, 3}, "segmentation");
  CHECK_NEAR(s["pixel_accuracy"].get<double>(), 2.0 / 3.0, 1e-15);
  CHECK_NEAR(s["mean_iou"].get<double>(), 0.5, 1e-15);  // class 0: IoU 1/2, class 1: IoU 1/2
  // [1, 2, 5]: two anchors of 5 classes; the second anchor changes its top class
  const std::vector<double> dr = {0, 1, 0, 0, 0, /**/ 0, 0, 0, 0, 1};
  const std::vector<double> da = {0, 1, 0, 0, 0, /**/ 1, 0, 0, 0, 0};
  CHECK_NEAR(output_metrics(da, dr, {1, 2, 5}, "detection")["class_agree"].get<double>(), 0.5, 1e-15);
}

TEST(collector_retries_then_succeeds) {
  FakeTransport t;
  t.script = {HttpResponse{503, "busy", {}, ""}, HttpResponse{0, "", {}, "Connection refused"},
              HttpResponse{201, R"({"run_id":"dev-12345678"})", {}, ""}};
  std::vector<int> sleeps;
  CollectorClient c(t, "http://127.0.0.1:9/", "tok", RetryPolicy{5, 100, 150}, [&](int ms) { sleeps.push_back(ms); });
  const json r = c.put_run("dev-12345678", {{"source", "device"}});
  CHECK(r["run_id"] == "dev-12345678");
  CHECK(t.calls.size() == 3);
  CHECK(c.retries_used() == 2);
  CHECK((sleeps == std::vector<int>{100, 150}));  // doubled, then capped
  for (const auto& call : t.calls) {  // the very same request every time
    CHECK(call.method == "PUT");
    CHECK(call.url == "http://127.0.0.1:9/api/v1/runs/dev-12345678");
    CHECK(call.body == t.calls[0].body);
    CHECK(has_header(call, "Authorization", "Bearer tok"));
  }
}

TEST(collector_does_not_retry_client_errors) {
  FakeTransport t;
  t.script = {HttpResponse{422, R"({"error":"validation","reason":"results[0].size: must be >= 16"})", {}, ""}};
  CollectorClient c(t, "http://h:1", "tok", RetryPolicy{5, 1, 1}, [](int) {});
  CHECK_THROWS(CollectorError, c.post_results("dev-12345678", json::array({{{"model", "m"}}})), "HTTP 422",
               "validation: results[0].size: must be >= 16");
  CHECK(t.calls.size() == 1);
  CHECK(json::parse(t.calls[0].body).contains("results"));
  t.script = {HttpResponse{401, R"({"error":"unauthorized","reason":"bad token"})", {}, ""}};
  CHECK_THROWS(CollectorError, c.complete("dev-12345678", json::object()), "HTTP 401", "check the token");
}

TEST(collector_does_not_retry_store_faults) {
  // The collector's answer to a store it cannot write (read-only file, full disk) or a bug of its own.
  for (const long status : {500L, 507L}) {
    FakeTransport t;
    t.script = {HttpResponse{status, R"({"error":"store","reason":"results store failed (disk is full); do not retry"})",
                             {}, ""}};
    CollectorClient c(t, "http://h:1", "tok", RetryPolicy{5, 1, 1}, [](int) {});
    CHECK_THROWS(CollectorError, c.post_results("dev-12345678", json::array({{{"model", "m"}}})),
                 "HTTP " + std::to_string(status), "store: results store failed", "not retried");
    CHECK(t.calls.size() == 1);
    CHECK(c.retries_used() == 0);
  }
  for (const long status : {0L, 429L, 502L, 503L, 504L}) {
    CHECK(is_retryable(HttpResponse{status, "", {}, ""}));
  }
  for (const long status : {400L, 401L, 404L, 409L, 413L, 422L, 500L, 501L, 507L}) {
    CHECK(!is_retryable(HttpResponse{status, "", {}, ""}));
  }
}

TEST(collector_honours_retry_after) {
  FakeTransport t;
  t.script = {HttpResponse{503, "busy", {{"retry-after", "2"}}, ""},
              HttpResponse{503, "busy", {{"retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"}}, ""},
              HttpResponse{503, "busy", {{"retry-after", "600"}}, ""}, HttpResponse{200, "{}", {}, ""}};
  std::vector<int> sleeps;
  CollectorClient c(t, "http://h:1", "tok", RetryPolicy{5, 100, 5000}, [&](int ms) { sleeps.push_back(ms); });
  c.complete("dev-12345678", json::object());
  CHECK(t.calls.size() == 4);
  // as asked; a date is not read (the client's back-off, doubled once); a long wait is capped
  CHECK((sleeps == std::vector<int>{2000, 200, 5000}));
  CHECK(!retry_after_ms(HttpResponse{503, "", {{"retry-after", "-1"}}, ""}).has_value());
  CHECK(!retry_after_ms(HttpResponse{503, "", {}, ""}).has_value());
}

TEST(collector_gives_up_on_no_response) {
  FakeTransport t;
  for (int i = 0; i < 3; ++i) t.script.push_back(HttpResponse{0, "", {}, "Connection refused"});
  CollectorClient c(t, "http://127.0.0.1:9", "tok", RetryPolicy{3, 1, 1}, [](int) {});
  CHECK_THROWS(CollectorError, c.health(), "no response", "Connection refused", "is the collector running");
  CHECK(t.calls.size() == 3);
  CHECK(t.calls[0].url == "http://127.0.0.1:9/api/v1/health");
  CHECK(t.calls[0].headers.size() == 1);  // health needs no token: only Accept
  CHECK_THROWS(CollectorError, CollectorClient(t, "127.0.0.1:9", "tok"), "must start with http");
}

TEST(collector_encodes_paths) {
  CHECK(encode_path("tensors/m/256-0.input.image.bin") == "tensors/m/256-0.input.image.bin");
  CHECK(encode_path("a b/c#d?e") == "a%20b/c%23d%3Fe");
}

TEST(collector_fixtures_verify_downloads) {
  MiniSet s = make_set("download");
  const fs::path cache = temp_dir("download-cache");
  FakeTransport t;
  const std::string good = floats_bytes({1, 2});
  t.script = {HttpResponse{200, good, {}, ""}, HttpResponse{200, "tampered", {}, ""}};
  CollectorClient c(t, "http://h:1", "tok", RetryPolicy{1, 1, 1}, [](int) {});
  CollectorFixtures src(c, cache.string());
  const LocalFile f = src.fetch("tensors/a.bin", sha256_hex(good));
  CHECK(f.path == (cache / "tensors/a.bin").string());
  CHECK(t.calls[0].url == "http://h:1/api/v1/fixtures/files/tensors/a.bin");
  CHECK_THROWS(HashMismatch, src.fetch("tensors/b.bin", sha256_hex("expected")), "refused tensors/b.bin");
  CHECK(!fs::exists(cache / "tensors/b.bin"));  // a refused download is not kept
  CollectorFixtures again(c, cache.string());
  again.fetch("tensors/a.bin", sha256_hex(good));  // served from the cache
  CHECK(t.calls.size() == 2);
  CHECK(again.downloads() == 0);
}

TEST(plan_selects_cases) {
  MiniSet s = make_set("plan");
  const Manifest m = Manifest::parse(s.manifest.dump());
  const RunnerRegistry reg = fake_registry();
  ReplayOptions all;
  auto plan = plan_cases(m, reg, all);
  CHECK(plan.size() == 2);  // lite at 16 and 32; onnx has no runner and was not asked for
  CHECK(plan[0].test_id() == "ident-lite-16");
  CHECK(plan[0].problem.empty());
  ReplayOptions asked;
  asked.variants = {"onnx", "lite"};
  asked.sizes = {32};
  plan = plan_cases(m, reg, asked);
  CHECK(plan.size() == 2);
  CHECK(plan[0].variant == "lite");
  CHECK(plan[1].variant == "onnx");
  CHECK(plan[1].problem.find("no onnx artifact of ident serves size 32") != std::string::npos);
  asked.sizes = {16};
  plan = plan_cases(m, reg, asked);
  CHECK(plan[1].problem.find("no runner for format 'onnx'") != std::string::npos);
  ReplayOptions unknown;
  unknown.models = {"resnet"};
  CHECK_THROWS(FixtureError, plan_cases(m, reg, unknown), "'resnet' is not in this fixture set", "ident");
  unknown.models = {};
  unknown.variants = {"coreml_fp16"};
  CHECK_THROWS(FixtureError, plan_cases(m, reg, unknown), "variant 'coreml_fp16'", "lite, onnx");
}

TEST(plan_compute_units_axis) {
  MiniSet s = make_set("cu");
  const Manifest m = Manifest::parse(s.manifest.dump());
  RunnerRegistry reg;
  reg.add("fake", {[](const RunnerOptions&) { return std::make_unique<IdentityRunner>(); },
                   {"cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"}});
  ReplayOptions o;
  o.sizes = {16};
  auto plan = plan_cases(m, reg, o);
  CHECK(plan.size() == 4);
  CHECK(plan[2].test_id() == "ident-lite-16-cpuAndNeuralEngine");
  o.compute_units = {"all"};
  CHECK(plan_cases(m, reg, o).size() == 1);
  o.compute_units = {"gpu"};
  CHECK_THROWS(FixtureError, plan_cases(m, reg, o), "unknown compute units 'gpu'");
}

TEST(replay_runs_a_case) {
  MiniSet s = make_set("replay");
  const Manifest m = Manifest::parse(s.manifest.dump());
  const RunnerRegistry reg = fake_registry();
  LocalFixtures src(s.dir.string());
  ReplayOptions o;
  o.rounds = 7;
  o.warmup = 2;
  o.dump_dir = temp_dir("dump").string();
  PlatformHooks hooks = default_platform_hooks();
  hooks.thermal_state = [] { return std::optional<std::string>("nominal"); };
  const auto plan = plan_cases(m, reg, o);
  const json r = run_case(plan[0], m, src, reg, o, hooks);
  CHECK(r["error"].is_null());
  CHECK(r["executor"] == "identity");
  CHECK(r["samples_ns"].size() == 7);
  for (const auto& ns : r["samples_ns"]) CHECK(ns.get<int64_t>() > 0);
  CHECK(r["warmup_rounds"] == 2);
  CHECK(r["load_ms"].get<double>() >= 0.0);
  CHECK(r["first_run_ms"].get<double>() >= 0.0);
  CHECK(r["thermal_state_before"] == "nominal");
  CHECK(r["case"] == "ident/16/0");
  CHECK(r["compute_units"].is_null());
  const json& mm = r["metrics"]["output"];
  CHECK(mm["max_abs"].get<double>() == 0.5);  // golden[0] was moved by 0.5
  CHECK(mm["top1_agree"].is_number());        // [1, 16] logits of a classification model
  CHECK(fs::exists(r["extra"]["dumped_outputs"]["output"]["path"].get<std::string>()));
#if defined(__linux__)
  CHECK(r["peak_memory_mb"].get<double>() > 0.0);
#endif
  // Every key the collector accepts, and no other.
  const std::vector<std::string> keys = {"model", "variant", "size", "case", "compute_units", "run_index", "threads",
                                         "executor", "load_ms", "compile_ms", "first_run_ms", "samples_ns",
                                         "warmup_rounds", "peak_memory_mb", "thermal_state_before",
                                         "thermal_state_after", "metrics", "xctest", "error", "extra"};
  CHECK(r.size() == keys.size());
  for (const auto& k : keys) CHECK(r.contains(k));
}

TEST(replay_compile_step_and_measure_runner) {
  MiniSet s = make_set("compile");
  const Manifest m = Manifest::parse(s.manifest.dump());
  RunnerRegistry reg;
  reg.add("fake", {[](const RunnerOptions& o) { return std::make_unique<CompilingRunner>(o); }, {"cpuOnly", "all"}});
  LocalFixtures src(s.dir.string());
  ReplayOptions o;
  o.rounds = 2;
  o.compute_units = {"cpuOnly"};
  const auto plan = plan_cases(m, reg, o);
  CHECK(plan.size() == 2);
  const json r = run_case(plan[0], m, src, reg, o, {});
  CHECK(r["error"].is_null());
  CHECK(r["compile_ms"].get<double>() >= 0.0);
  CHECK(r["compute_units"] == "cpuOnly");
  auto runner = load_case_runner(plan[0], m, src, reg, o);
  runner->run();
  CHECK(runner->outputs().at(0).second.numel() == 16);
}

TEST(replay_prepare_details_and_memory_hooks) {
  MiniSet s = make_set("hooks");
  const Manifest m = Manifest::parse(s.manifest.dump());
  std::vector<std::string> log;
  RunnerRegistry reg;
  reg.add("fake", {[&log](const RunnerOptions&) { return std::make_unique<CachingRunner>(log); }, {}});
  LocalFixtures src(s.dir.string());
  ReplayOptions o;
  o.rounds = 3;
  int resets = 0, samples = 0;
  PlatformHooks hooks;
  hooks.reset_peak_memory = [&] { ++resets; };
  hooks.sample_memory = [&] { ++samples; };
  hooks.peak_memory_mb = []() -> std::optional<double> { return 1.5; };
  hooks.memory_measure = "test measure";
  const auto plan = plan_cases(m, reg, o);
  CHECK(plan.size() == 2);  // one artifact serves both sizes
  const json first = run_case(plan[0], m, src, reg, o, hooks);
  const json second = run_case(plan[1], m, src, reg, o, hooks);
  CHECK(first["error"].is_null() && second["error"].is_null());
  CHECK(first["compile_ms"].is_number());
  CHECK(second["compile_ms"].is_null());  // the artifact was compiled by the first case
  CHECK(log.size() == 3 && log[0].rfind("prepare ", 0) == 0 && log[1].rfind("compile ", 0) == 0 &&
        log[2].rfind("prepare ", 0) == 0);
  CHECK(resets == 2);
  CHECK(samples == 10);  // prepare, compile, load, first run, timed runs; twice
  CHECK(first["peak_memory_mb"].get<double>() == 1.5);
  CHECK(first["extra"]["memory_measure"] == "test measure");
  CHECK(first["extra"]["runner"]["threads_used"] == 3);
}

TEST(replay_reports_refused_file) {
  MiniSet s = make_set("replay-refuse");
  write_file(s.dir / "tensors/ident/32-0.golden.output.bin", floats_bytes(std::vector<float>(32, 0.0f)));
  const Manifest m = Manifest::parse(s.manifest.dump());
  const RunnerRegistry reg = fake_registry();
  LocalFixtures src(s.dir.string());
  ReplayOptions o;
  const auto plan = plan_cases(m, reg, o);
  const json ok = run_case(plan[0], m, src, reg, o, {});
  CHECK(ok["error"].is_null());
  const json bad = run_case(plan[1], m, src, reg, o, {});
  CHECK(bad["error"].get<std::string>().find("fixtures: refused tensors/ident/32-0.golden.output.bin") == 0);
  CHECK(bad["samples_ns"].empty());
  CHECK(bad["load_ms"].is_null());
}

TEST(replay_sink_batches) {
  FakeTransport t;
  CollectorClient c(t, "http://h:1", "tok", RetryPolicy{1, 1, 1}, [](int) {});
  ResultSink sink(&c, "dev-abcdefgh", 2);
  sink.open({{"source", "device"}});
  for (int i = 0; i < 5; ++i) sink.add({{"i", i}});
  sink.finish();
  // PUT, POST(2), POST(2), POST(1), complete
  CHECK(t.calls.size() == 5);
  CHECK(t.calls[0].method == "PUT");
  CHECK(json::parse(t.calls[3].body)["results"].size() == 1);
  CHECK(t.calls[4].url == "http://h:1/api/v1/runs/dev-abcdefgh/complete");
  CHECK(json::parse(t.calls[4].body)["expected_results"] == 5);
  CHECK(new_run_id("dev").rfind("dev-", 0) == 0);
  CHECK(new_run_id() != new_run_id());
}

// ---------------------------------------------------------------------------------------------
// USB relay protocol: a fake host relay dials into the listener, as parbench device relay does.

namespace {

int dial(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) throw Failure("connect failed");
  return fd;
}

std::string recv_exact(int fd, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, out.data() + got, n - got, 0);
    if (r <= 0) throw Failure("the listener closed the connection");
    got += static_cast<std::size_t>(r);
  }
  return out;
}

uint64_t be(const std::string& b) {
  uint64_t v = 0;
  for (unsigned char c : b) v = (v << 8) | c;
  return v;
}

std::string be_bytes(uint64_t v, int n) {
  std::string out;
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  return out;
}

struct RelayedRequest {
  json head;
  std::string body;
};

RelayedRequest read_request(int fd) {
  RelayedRequest r;
  r.head = json::parse(recv_exact(fd, be(recv_exact(fd, 4))));
  r.body = recv_exact(fd, be(recv_exact(fd, 8)));
  return r;
}

void write_response(int fd, const json& head, const std::string& body) {
  const std::string h = head.dump();
  const std::string frame = be_bytes(h.size(), 4) + h + be_bytes(body.size(), 8) + body;
  CHECK(::send(fd, frame.data(), frame.size(), 0) == static_cast<ssize_t>(frame.size()));
}

}  // namespace

TEST(relay_exchanges_frames) {
  RelayListenerTransport t(0, 5, 5);
  CHECK(t.port() > 0);
  RelayedRequest seen;
  std::string greeting;
  std::thread host([&] {
    const int fd = dial(t.port());
    greeting = recv_exact(fd, 8);
    seen = read_request(fd);
    write_response(fd, {{"status", 201}, {"headers", {{"X-Parbench-Archive", "zip"}}}}, "created");
    const RelayedRequest get = read_request(fd);
    write_response(fd, {{"status", 200}, {"headers", json::object()}}, std::string(200000, 'x'));
    (void)get;
    ::close(fd);
  });
  const HttpResponse r = t.send("PUT", "http://127.0.0.1:1/api/v1/runs/r1?x=1", {{"Authorization", "Bearer t"}},
                                "{\"a\": 1}");
  const fs::path dir = temp_dir("relay");
  const HttpResponse d = t.download("http://whatever/api/v1/fixtures/files/a.bin", {}, (dir / "sub/a.bin").string());
  host.join();
  CHECK(greeting == kRelayGreeting);
  CHECK(seen.head["method"] == "PUT");
  CHECK(seen.head["path"] == "/api/v1/runs/r1?x=1");
  CHECK(seen.head["headers"][0][0] == "Authorization" && seen.head["headers"][0][1] == "Bearer t");
  CHECK(seen.body == "{\"a\": 1}");
  CHECK(r.status == 201 && r.body == "created");
  CHECK(r.headers.at("x-parbench-archive") == "zip");  // names lower-cased, as the Transport contract says
  CHECK(d.status == 200 && d.body.empty());
  CHECK(fs::file_size(dir / "sub/a.bin") == 200000);
}

TEST(relay_reconnects_and_reports_failures) {
  RelayListenerTransport t(0, 5, 5);
  std::thread host([&] {
    int fd = dial(t.port());
    recv_exact(fd, 8);
    read_request(fd);
    ::close(fd);  // dropped mid-exchange
    fd = dial(t.port());
    recv_exact(fd, 8);
    read_request(fd);
    write_response(fd, {{"status", 0}, {"error", "collector at http://x:1 refused the connection"}}, "");
    read_request(fd);
    write_response(fd, {{"status", 200}}, "{}");
    ::close(fd);
  });
  const HttpResponse dropped = t.send("GET", "http://h/api/v1/health", {}, "");
  const HttpResponse refused = t.send("GET", "http://h/api/v1/health", {}, "");
  const HttpResponse ok = t.send("GET", "http://h/api/v1/health", {}, "");
  host.join();
  CHECK(dropped.status == 0 && dropped.error.find("closed the connection") != std::string::npos);
  CHECK(refused.status == 0 && refused.error.find("refused the connection") != std::string::npos);
  CHECK(ok.status == 200 && ok.body == "{}");
}

TEST(relay_says_what_to_run_when_nobody_dials_in) {
  RelayListenerTransport t(0, 1, 1);
  const HttpResponse r = t.send("GET", "http://h/api/v1/health", {}, "");
  CHECK(r.status == 0);
  CHECK(r.error.find("no relay connected to 127.0.0.1:" + std::to_string(t.port())) != std::string::npos);
  CHECK(r.error.find("parbench device relay") != std::string::npos);
  CHECK(url_path("http://a:1/api/v1/x?y=2") == "/api/v1/x?y=2");
  CHECK(url_path("http://a:1") == "/");
}

TEST(collector_download_goes_to_disk) {
  FakeTransport t;
  t.script = {HttpResponse{503, "busy", {}, ""}, HttpResponse{200, "bytes", {{"x-parbench-sha256", "s"}}, ""}};
  CollectorClient c(t, "http://h:1", "tok", RetryPolicy{2, 1, 1}, [](int) {});
  const fs::path dir = temp_dir("download-disk");
  const HttpResponse r = c.download("a b.bin", (dir / "x/a.bin").string());
  CHECK(t.calls.size() == 2 && t.calls[1].url == "http://h:1/api/v1/fixtures/files/a%20b.bin");
  CHECK(t.calls[1].method == "GET" && has_header(t.calls[1], "Authorization", "Bearer tok"));
  CHECK(r.body.empty() && r.headers.at("x-parbench-sha256") == "s");
  std::ifstream in(dir / "x/a.bin");
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == "bytes");
}

int main(int argc, char** argv) {
  const std::string group = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0;
  for (const auto& t : registry()) {
    if (!group.empty() && t.name.rfind(group, 0) != 0) continue;
    try {
      t.fn();
      ++passed;
      std::cout << "ok   " << t.name << "\n";
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAIL " << t.name << ": " << e.what() << "\n";
    }
  }
  if (passed + failed == 0) {
    std::cout << "no test matches '" << group << "'\n";
    return 1;
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed ? 1 : 0;
}
