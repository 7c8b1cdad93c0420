// parbench-device-runner: replays a fixture set with LibTorch and posts the results to a
// parbench collector (or writes them to a file when offline).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/collector.h"
#include "parbench/curl_transport.h"
#include "parbench/errors.h"
#include "parbench/fixtures.h"
#include "parbench/libtorch_runner.h"
#include "parbench/manifest.h"
#include "parbench/metrics.h"
#include "parbench/relay_transport.h"
#include "parbench/replay.h"
#include "parbench/sha256.h"

#ifndef PARBENCH_VERSION
#define PARBENCH_VERSION "0.1.0"
#endif

using nlohmann::json;
using namespace parbench;
namespace fs = std::filesystem;

namespace {

#if defined(__clang__)
const char* kCompiler = "clang " __clang_version__;
#elif defined(__GNUC__)
const char* kCompiler = "gcc " __VERSION__;
#else
const char* kCompiler = "unknown";
#endif

const char* kUsage = R"(usage:
  parbench-device-runner [run] (--collector URL --token T | --fixtures-dir DIR) [options]
  parbench-device-runner post --collector URL --token T --results results.json
  parbench-device-runner verify --fixtures-dir DIR
  parbench-device-runner metrics --candidate F --reference F --dtype D --shape N,C [--ref-dtype D] [--task T]

run options:
  --collector URL        collector base URL (e.g. http://127.0.0.1:8765); fixtures come from it
  --token T              bearer token (or env PARBENCH_TOKEN)
  --fixtures-dir DIR     read the fixture set from DIR instead (offline unless --collector is given)
  --usb-port PORT        USB mode: listen on 127.0.0.1:PORT and reach the collector through the
                         relay that dials in (parbench device relay); needs --token, not --collector
  --cache-dir DIR        where downloaded fixtures are kept (default ~/.cache/parbench/device-fixtures)
  --models a,b           only these models          --variants lite,torchscript   only these forms
  --sizes 256,320        only these sizes           --rounds N (10)  --warmup N (3)  --threads N (1)
  --run-id ID            reuse a run id (default: a new one)     --run-index N (0)
  --commit SHA           recorded in the run (or env PARBENCH_COMMIT)
  --source device|host   run source recorded by the collector (default device)
  --out FILE             write the run and all results as JSON
  --dump-outputs DIR     write every candidate output as a raw tensor under DIR
  --relay-wait S (60)    USB mode: how long to wait for the relay to dial in
  --batch N (16)  --retries N (6)  --timeout S (300)  --quiet
exit status: 0 all cases ran, 1 some cases failed (see their "error"), 2 bad usage or fixture set,
3 the collector refused or could not be reached.
)";

struct Args {
  std::string command = "run";
  std::map<std::string, std::string> opts;
  bool quiet = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  int i = 1;
  if (i < argc && argv[i][0] != '-') a.command = argv[i++];
  for (; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "-h" || key == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (key == "--version") {
      std::cout << "parbench-device-runner " << PARBENCH_VERSION << " (libtorch " << libtorch_version() << ")\n";
      std::exit(0);
    }
    if (key == "--quiet") {
      a.quiet = true;
      continue;
    }
    if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
      throw std::invalid_argument("unexpected argument '" + key + "' (options take a value: --name VALUE)");
    }
    a.opts[key.substr(2)] = argv[++i];
  }
  return a;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int to_int(const std::string& name, const std::string& value, int min_value) {
  try {
    std::size_t used = 0;
    const int v = std::stoi(value, &used);
    if (used != value.size() || v < min_value) throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + name + " needs an integer >= " + std::to_string(min_value) + ", got '" + value + "'");
  }
}

std::string opt(const Args& a, const std::string& key, const std::string& fallback = "") {
  auto it = a.opts.find(key);
  return it == a.opts.end() ? fallback : it->second;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

void check_known(const Args& a, const std::vector<std::string>& known) {
  for (const auto& [key, value] : a.opts) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      throw std::invalid_argument("unknown option --" + key + " for '" + a.command + "' (see --help)");
    }
  }
}

std::string default_cache_dir() {
  const std::string xdg = env_or("XDG_CACHE_HOME", "");
  if (!xdg.empty()) return (fs::path(xdg) / "parbench" / "device-fixtures").string();
  return (fs::path(env_or("HOME", "/tmp")) / ".cache" / "parbench" / "device-fixtures").string();
}

double median_ms(const json& samples) {
  std::vector<double> v;
  for (const auto& s : samples) v.push_back(s.get<double>() / 1e6);
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string progress_line(const json& r) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(2);
  out << r["model"].get<std::string>() << "-" << r["variant"].get<std::string>() << "-" << r["size"].get<int>() << " "
      << r["case"].get<std::string>() << ": ";
  if (!r["error"].is_null()) {
    out << "ERROR " << r["error"].get<std::string>();
    return out.str();
  }
  out << "load " << r["load_ms"].get<double>() << " ms, first " << r["first_run_ms"].get<double>() << " ms, median "
      << median_ms(r["samples_ns"]) << " ms (" << r["samples_ns"].size() << " rounds)";
  out.unsetf(std::ios::fixed);
  out.precision(3);
  for (const auto& [name, m] : r["metrics"].items()) {
    out << ", " << name << " max_abs ";
    if (m["max_abs"].is_null()) {
      out << "null";
    } else {
      out << m["max_abs"].get<double>();
    }
  }
  return out.str();
}

int cmd_metrics(const Args& a) {
  check_known(a, {"candidate", "reference", "dtype", "ref-dtype", "shape", "task"});
  std::vector<int64_t> shape;
  for (const auto& d : split(opt(a, "shape"))) shape.push_back(std::stoll(d));
  if (opt(a, "candidate").empty() || opt(a, "reference").empty() || shape.empty()) {
    throw std::invalid_argument("metrics needs --candidate, --reference and --shape");
  }
  const DType cd = parse_dtype(opt(a, "dtype", "float32"));
  const DType rd = parse_dtype(opt(a, "ref-dtype", opt(a, "dtype", "float32")));
  const Tensor c = read_tensor_file(opt(a, "candidate"), cd, shape);
  const Tensor r = read_tensor_file(opt(a, "reference"), rd, shape);
  std::cout << compare_tensors(c, r, opt(a, "task")).dump() << "\n";
  return 0;
}

int cmd_verify(const Args& a) {
  check_known(a, {"fixtures-dir"});
  LocalFixtures src(opt(a, "fixtures-dir"));
  const Manifest m = Manifest::parse(src.manifest_text());
  int bad = 0, ok = 0;
  auto check = [&](const std::string& path, const std::string& sha) {
    try {
      src.fetch(path, sha);
      ++ok;
    } catch (const FixtureError& e) {
      ++bad;
      std::cerr << e.what() << "\n";
    }
  };
  for (const auto& [path, t] : m.tensors) check(path, t.sha256);
  for (const auto& model : m.models) {
    for (const auto& [variant, list] : model.artifacts) {
      for (const auto& art : list) check(art.path, art.sha256);
    }
  }
  std::cout << ok << " files verified, " << bad << " refused\n";
  return bad ? 1 : 0;
}

int cmd_post(const Args& a) {
  check_known(a, {"collector", "token", "results", "batch", "retries", "timeout"});
  std::ifstream in(opt(a, "results"));
  if (!in) throw std::invalid_argument("--results: cannot read '" + opt(a, "results") + "'");
  const json doc = json::parse(in);
  CurlTransport transport(to_int("timeout", opt(a, "timeout", "300"), 1));
  RetryPolicy policy;
  policy.attempts = to_int("retries", opt(a, "retries", "6"), 1);
  CollectorClient client(transport, opt(a, "collector"), opt(a, "token", env_or("PARBENCH_TOKEN", "")), policy);
  ResultSink sink(&client, doc.at("run_id").get<std::string>(), to_int("batch", opt(a, "batch", "16"), 1));
  sink.open(doc.at("run"));
  for (const auto& r : doc.at("results")) sink.add(r);
  sink.finish();
  std::cout << "posted " << sink.posted() << " results to run " << sink.run_id() << "\n";
  return 0;
}

int cmd_run(const Args& a) {
  check_known(a, {"collector", "token", "fixtures-dir", "cache-dir", "models", "variants", "sizes", "compute-units",
                  "rounds", "warmup", "threads", "run-id", "run-index", "commit", "source", "out", "dump-outputs",
                  "batch", "retries", "timeout", "usb-port", "relay-wait"});
  std::string collector_url = opt(a, "collector");
  const std::string fixtures_dir = opt(a, "fixtures-dir");
  const std::string usb_port = opt(a, "usb-port");
  if (!usb_port.empty() && !collector_url.empty()) {
    throw std::invalid_argument("--usb-port and --collector exclude each other: in USB mode the relay knows the collector");
  }
  if (collector_url.empty() && fixtures_dir.empty() && usb_port.empty()) {
    throw std::invalid_argument("give --collector URL (with --token), --usb-port PORT (with --token) or --fixtures-dir DIR (offline)");
  }
  ReplayOptions ro;
  ro.models = split(opt(a, "models"));
  ro.variants = split(opt(a, "variants"));
  for (const auto& s : split(opt(a, "sizes"))) ro.sizes.push_back(to_int("sizes", s, 1));
  ro.compute_units = split(opt(a, "compute-units"));
  ro.rounds = to_int("rounds", opt(a, "rounds", "10"), 1);
  ro.warmup = to_int("warmup", opt(a, "warmup", "3"), 0);
  ro.threads = to_int("threads", opt(a, "threads", "1"), 1);
  ro.run_index = to_int("run-index", opt(a, "run-index", "0"), 0);
  ro.dump_dir = opt(a, "dump-outputs");
  const std::string source_kind = opt(a, "source", "device");
  if (source_kind != "device" && source_kind != "host") throw std::invalid_argument("--source is device or host");

  std::unique_ptr<Transport> transport;
  std::unique_ptr<CollectorClient> client;
  json health = nullptr;
  if (!usb_port.empty()) {
    auto relay = std::make_unique<RelayListenerTransport>(to_int("usb-port", usb_port, 0),
                                                          to_int("relay-wait", opt(a, "relay-wait", "60"), 1),
                                                          to_int("timeout", opt(a, "timeout", "300"), 1));
    collector_url = "http://127.0.0.1:" + std::to_string(relay->port());
    std::cerr << "USB mode: listening on 127.0.0.1:" << relay->port() << " for the relay\n";
    transport = std::move(relay);
  }
  if (!collector_url.empty()) {
    const std::string token = opt(a, "token", env_or("PARBENCH_TOKEN", ""));
    if (token.empty()) throw std::invalid_argument("--collector and --usb-port need --token (or PARBENCH_TOKEN)");
    if (!transport) transport = std::make_unique<CurlTransport>(to_int("timeout", opt(a, "timeout", "300"), 1));
    RetryPolicy policy;
    policy.attempts = to_int("retries", opt(a, "retries", "6"), 1);
    if (!usb_port.empty()) {
      // One try: the listener already waits --relay-wait s for the relay to dial in.
      RetryPolicy once;
      once.attempts = 1;
      CollectorClient(*transport, collector_url, token, once).health();
    }
    client = std::make_unique<CollectorClient>(*transport, collector_url, token, policy);
    health = client->health();
  }
  std::unique_ptr<FixtureSource> source;
  if (!fixtures_dir.empty()) {
    source = std::make_unique<LocalFixtures>(fixtures_dir);
  } else {
    source = std::make_unique<CollectorFixtures>(*client, opt(a, "cache-dir", default_cache_dir()));
  }
  const std::string manifest_text = source->manifest_text();
  const Manifest manifest = Manifest::parse(manifest_text);

  RunnerRegistry registry;
  register_libtorch_runners(registry);
  const auto plan = plan_cases(manifest, registry, ro);
  if (plan.empty()) {
    throw FixtureError("nothing to run: no case of the fixture set matches the filters with a runner here (formats: pt, ptl)");
  }

  const json host = describe_host();
  json run = {
      {"source", source_kind},
      {"created_utc", utc_now_iso()},
      {"machine", host["machine"]},
      {"device", host["device"]},
      {"runtime", {{"name", "libtorch"}, {"version", libtorch_version()}}},
      {"commit", nullptr},
      {"env", {{"libtorch", libtorch_version()}, {"parbench_device_runner", PARBENCH_VERSION},
               {"compiler", kCompiler}}},
      {"fixture_set", {{"manifest_sha256", sha256_hex(manifest_text)}, {"created_utc", manifest.created_utc},
                       {"generator", manifest.generator}, {"from", source->describe()}}},
  };
  const std::string commit = opt(a, "commit", env_or("PARBENCH_COMMIT", ""));
  if (!commit.empty()) run["commit"] = commit;
  const std::string run_id = opt(a, "run-id", new_run_id("dev"));

  ResultSink sink(client.get(), run_id, static_cast<std::size_t>(to_int("batch", opt(a, "batch", "16"), 1)));
  const PlatformHooks hooks = default_platform_hooks();
  const std::string out_path = opt(a, "out");
  auto write_out = [&](const std::string& status, const std::string& message) {
    if (out_path.empty()) return;
    json doc = {{"run_id", run_id}, {"run", run}, {"results", sink.results()},
                {"collector", collector_url.empty() ? json(nullptr) : json(collector_url)},
                {"status", status}, {"message", message}};
    std::ofstream f(out_path);
    f << doc.dump(1) << "\n";
    if (!f) std::cerr << "could not write " << out_path << "\n";
  };

  int failed = 0;
  try {
    sink.open(run);
    if (!a.quiet) {
      std::cerr << "run " << run_id << ": " << plan.size() << " cases from " << source->describe() << "\n";
    }
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const json r = run_case(plan[i], manifest, *source, registry, ro, hooks);
      if (!r["error"].is_null()) ++failed;
      if (!a.quiet) std::cerr << "[" << i + 1 << "/" << plan.size() << "] " << progress_line(r) << "\n";
      sink.add(r);
    }
    sink.finish("complete", failed ? std::to_string(failed) + " cases failed" : "");
  } catch (const CollectorError& e) {
    write_out("collector_error", e.what());
    std::cerr << e.what() << "\nresults so far are in " << (out_path.empty() ? "(no --out given)" : out_path)
              << "; re-send them with: parbench-device-runner post --collector URL --token T --results FILE\n";
    return 3;
  }
  write_out("complete", "");
  std::cout << "run " << run_id << ": " << plan.size() - failed << " ok, " << failed << " failed";
  if (client) std::cout << ", " << sink.posted() << " posted to " << collector_url;
  if (!out_path.empty()) std::cout << ", written to " << out_path;
  std::cout << "\n";
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse_args(argc, argv);
    if (a.command == "run") return cmd_run(a);
    if (a.command == "post") return cmd_post(a);
    if (a.command == "verify") return cmd_verify(a);
    if (a.command == "metrics") return cmd_metrics(a);
    throw std::invalid_argument("unknown command '" + a.command + "'; commands: run, post, verify, metrics");
  } catch (const std::invalid_argument& e) {
    std::cerr << "parbench-device-runner: " << e.what() << "\n";
    return 2;
  } catch (const FixtureError& e) {
    std::cerr << "parbench-device-runner: " << e.what() << "\n";
    return 2;
  } catch (const CollectorError& e) {
    std::cerr << "parbench-device-runner: " << e.what() << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "parbench-device-runner: " << e.what() << "\n";
    return 2;
  }
}
