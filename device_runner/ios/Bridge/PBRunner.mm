#import "PBRunner.h"

#import <UIKit/UIKit.h>
#import <sys/utsname.h>

#include <chrono>
#include <map>
#include <memory>
#include <sstream>

#include "PBCoreMLRunner.h"
#include "PBExecuTorchRunner.h"
#include "PBURLSessionTransport.h"
#include "parbench/collector.h"
#include "parbench/errors.h"
#include "parbench/fixtures.h"
#include "parbench/manifest.h"
#include "parbench/relay_transport.h"
#include "parbench/replay.h"
#include "parbench/sha256.h"
#if defined(PARBENCH_WITH_LIBTORCH_LITE)
#include "parbench/libtorch_runner.h"
#endif

#ifndef PARBENCH_VERSION
#define PARBENCH_VERSION "0.1.0"
#endif

// Which test bundle this is: each links one model runtime besides Core ML.
#if defined(PARBENCH_WITH_LIBTORCH_LITE) && defined(PARBENCH_WITH_EXECUTORCH)
#error "one runtime per test bundle: LibTorch-Lite and ExecuTorch carry clashing XNNPACK, pthreadpool and cpuinfo"
#elif defined(PARBENCH_WITH_LIBTORCH_LITE)
static const char *const kBundle = "lite";
#elif defined(PARBENCH_WITH_EXECUTORCH)
static const char *const kBundle = "executorch";
#else
static const char *const kBundle = "coreml";
#endif

using nlohmann::json;

NSErrorDomain const PBRunnerErrorDomain = @"parbench";

namespace {

NSError *make_error(const std::string &message) {
  return [NSError errorWithDomain:PBRunnerErrorDomain
                             code:1
                         userInfo:@{NSLocalizedDescriptionKey : [NSString stringWithUTF8String:message.c_str()]}];
}

std::string env(NSDictionary<NSString *, NSString *> *vars, NSString *key, const std::string &fallback = "") {
  NSString *v = vars[key];
  return v.length ? std::string(v.UTF8String) : fallback;
}

std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::optional<std::string> thermal_state() {
  switch (NSProcessInfo.processInfo.thermalState) {
    case NSProcessInfoThermalStateNominal: return "nominal";
    case NSProcessInfoThermalStateFair: return "fair";
    case NSProcessInfoThermalStateSerious: return "serious";
    case NSProcessInfoThermalStateCritical: return "critical";
  }
  return std::nullopt;
}

std::string hardware_model() {
  struct utsname u {};
  uname(&u);
  return u.machine;  // e.g. iPhone15,2
}

// The collector did not answer the health check over the network: say what usually causes it.
std::string unreachable(const std::string &url, const std::string &why) {
  return "the collector at " + url + " did not answer (" + why +
         "). Likely causes: (1) the Local Network prompt on the phone was not accepted: tap Allow, or turn "
         "parbench on in Settings > Privacy & Security > Local Network, then rerun; (2) the Mac's firewall "
         "drops the connection: allow incoming connections for python3 in System Settings > Network > "
         "Firewall; (3) the address is wrong or the phone is on another network: use the Mac's "
         "<name>.local (scutil --get LocalHostName) or its IP, and `parbench serve --host 0.0.0.0`. USB mode "
         "avoids all three: parbench device run --usb (or TEST_RUNNER_PARBENCH_USB_PORT with parbench device relay)";
}

int env_int(NSDictionary<NSString *, NSString *> *vars, NSString *key, int fallback, int minimum) {
  const std::string text = env(vars, key, std::to_string(fallback));
  try {
    std::size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size() && v >= minimum) return v;
  } catch (const std::exception &) {
  }
  throw std::invalid_argument(std::string(key.UTF8String) + " must be an integer >= " + std::to_string(minimum) +
                              ", got '" + text + "'");
}

}  // namespace

@interface PBTestSpec ()
@property(nonatomic, readwrite) NSString *testName;
@property(nonatomic, readwrite) NSString *model;
@property(nonatomic, readwrite) NSString *variant;
@property(nonatomic, readwrite) NSInteger size;
@property(nonatomic, readwrite, nullable) NSString *computeUnits;
@property(nonatomic, readwrite) NSUInteger caseCount;
@property(nonatomic) std::vector<std::size_t> planIndices;
@end

@implementation PBTestSpec
@end

@implementation PBRunner {
  std::unique_ptr<parbench::Transport> _transport;
  std::unique_ptr<parbench::CollectorClient> _client;
  std::unique_ptr<parbench::FixtureSource> _fixtures;
  std::unique_ptr<parbench::ResultSink> _sink;
  parbench::Manifest _manifest;
  parbench::RunnerRegistry _registry;
  parbench::ReplayOptions _options;
  parbench::PlatformHooks _hooks;
  std::vector<parbench::PlannedCase> _plan;
  json _run;
  NSArray<PBTestSpec *> *_tests;
  NSString *_runId;
  NSInteger _measureIterations;
}

+ (instancetype)runnerFromEnvironment:(NSError **)error {
  PBRunner *runner = [[PBRunner alloc] init];
  try {
    [runner setUpFromEnvironment:NSProcessInfo.processInfo.environment];
  } catch (const std::exception &e) {
    if (error) *error = make_error(e.what());
    return nil;
  }
  return runner;
}

- (void)setUpFromEnvironment:(NSDictionary<NSString *, NSString *> *)vars {
  std::string url = env(vars, @"PARBENCH_COLLECTOR");
  const std::string token = env(vars, @"PARBENCH_TOKEN");
  const std::string usb_port = env(vars, @"PARBENCH_USB_PORT");
  std::string fixtures_dir = env(vars, @"PARBENCH_FIXTURES_DIR");
  if (!usb_port.empty() && !url.empty()) {
    throw std::runtime_error("PARBENCH_USB_PORT and PARBENCH_COLLECTOR are both set: USB mode reaches the collector "
                             "through the relay on the Mac; set one of them");
  }
  if ((url.empty() && usb_port.empty()) && fixtures_dir.empty()) {
    throw std::runtime_error(
        "none of PARBENCH_COLLECTOR, PARBENCH_USB_PORT or PARBENCH_FIXTURES_DIR is set: run the tests with "
        "`parbench device run`, or with TEST_RUNNER_PARBENCH_COLLECTOR=http://<mac>:8765 (or "
        "TEST_RUNNER_PARBENCH_USB_PORT=PORT and `parbench device relay` on the Mac) and "
        "TEST_RUNNER_PARBENCH_TOKEN=..., or copy a fixture set into the app's Documents and pass "
        "TEST_RUNNER_PARBENCH_FIXTURES_DIR=<folder>");
  }
  if ((!url.empty() || !usb_port.empty()) && token.empty()) {
    throw std::runtime_error("PARBENCH_TOKEN is not set: pass TEST_RUNNER_PARBENCH_TOKEN=<the token parbench serve printed>");
  }
  if (!fixtures_dir.empty() && fixtures_dir[0] != '/') {  // relative to the host app's Documents
    NSString *docs = NSSearchPathForDirectoriesInDomains(NSDocumentDirectory, NSUserDomainMask, YES).firstObject;
    fixtures_dir = std::string(docs.UTF8String) + "/" + fixtures_dir;
  }
  _options.rounds = env_int(vars, @"PARBENCH_ROUNDS", 10, 1);
  _options.warmup = env_int(vars, @"PARBENCH_WARMUP", 3, 0);
  _options.threads = env_int(vars, @"PARBENCH_THREADS", 1, 1);
  _options.models = split(env(vars, @"PARBENCH_MODELS"));
  _options.variants = split(env(vars, @"PARBENCH_VARIANTS"));
  for (const auto &s : split(env(vars, @"PARBENCH_SIZES"))) _options.sizes.push_back(std::stoi(s));
  _options.compute_units = split(env(vars, @"PARBENCH_COMPUTE_UNITS"));
  _measureIterations = env_int(vars, @"PARBENCH_MEASURE_ITERATIONS", 5, 1);

  std::string transport_kind = "offline";
  if (!usb_port.empty()) {
    // USB mode: the phone listens on its loopback, the Mac's relay dials in over usbmux.
    auto relay = std::make_unique<parbench::RelayListenerTransport>(
        env_int(vars, @"PARBENCH_USB_PORT", 0, 1), env_int(vars, @"PARBENCH_RELAY_WAIT", 120, 1), 300);
    url = "http://127.0.0.1:" + std::to_string(relay->port());
    // One try: it already waits PARBENCH_RELAY_WAIT s for the relay, and its error says what to
    // start on the Mac.
    parbench::RetryPolicy once;
    once.attempts = 1;
    parbench::CollectorClient(*relay, url, token, once).health();
    _transport = std::move(relay);
    _client = std::make_unique<parbench::CollectorClient>(*_transport, url, token);
    transport_kind = "usb-relay";
  } else if (!url.empty()) {
    // A short health check first: an unanswered Local Network prompt or a firewall that drops
    // the connection should fail in seconds with the likely causes, not after minutes of retries.
    parbench::URLSessionTransport probe_transport(10);
    parbench::RetryPolicy quick;
    quick.attempts = 3;
    quick.base_delay_ms = 3000;
    quick.max_delay_ms = 3000;
    parbench::CollectorClient probe(probe_transport, url, token, quick);
    try {
      probe.health();
    } catch (const parbench::CollectorError &e) {
      if (e.status == 0) throw std::runtime_error(unreachable(url, e.what()));
      throw;
    }
    _transport = std::make_unique<parbench::URLSessionTransport>();
    _client = std::make_unique<parbench::CollectorClient>(*_transport, url, token);
    transport_kind = "network";
  }
  if (!fixtures_dir.empty()) {
    // Offline: fixtures copied to the device; results only attached to the tests (and posted
    // too when a collector is also given).
    _fixtures = std::make_unique<parbench::LocalFixtures>(fixtures_dir);
  } else {
    NSString *caches = NSSearchPathForDirectoriesInDomains(NSCachesDirectory, NSUserDomainMask, YES).firstObject;
    _fixtures = std::make_unique<parbench::CollectorFixtures>(
        *_client, std::string([caches stringByAppendingPathComponent:@"parbench-fixtures"].UTF8String));
  }
  const std::string manifest_text = _fixtures->manifest_text();
  _manifest = parbench::Manifest::parse(manifest_text);

#if defined(PARBENCH_WITH_LIBTORCH_LITE)
  parbench::register_libtorch_runners(_registry);  // .ptl (LibTorch-Lite)
#endif
  parbench::register_executorch_runner(_registry);  // .pte, in the ExecuTorch bundle
  parbench::register_coreml_runner(_registry);      // .mlpackage, per compute unit
  _plan = parbench::plan_cases(_manifest, _registry, _options);

  _hooks = parbench::default_platform_hooks();
  _hooks.thermal_state = thermal_state;

  // One test per model x form x size x compute unit, in plan order.
  std::map<std::string, PBTestSpec *> by_name;
  NSMutableArray<PBTestSpec *> *tests = [NSMutableArray array];
  for (std::size_t i = 0; i < _plan.size(); ++i) {
    const auto &pc = _plan[i];
    std::string name = "test_" + pc.model->name + "__" + pc.variant + "__" + std::to_string(pc.kase->size);
    if (!pc.compute_units.empty()) name += "__" + pc.compute_units;
    PBTestSpec *spec = by_name[name];
    if (spec == nil) {
      spec = [[PBTestSpec alloc] init];
      spec.testName = [NSString stringWithUTF8String:name.c_str()];
      spec.model = [NSString stringWithUTF8String:pc.model->name.c_str()];
      spec.variant = [NSString stringWithUTF8String:pc.variant.c_str()];
      spec.size = pc.kase->size;
      spec.computeUnits = pc.compute_units.empty() ? nil : [NSString stringWithUTF8String:pc.compute_units.c_str()];
      by_name[name] = spec;
      [tests addObject:spec];
    }
    std::vector<std::size_t> indices = spec.planIndices;
    indices.push_back(i);
    spec.planIndices = indices;
    spec.caseCount = indices.size();
  }
  _tests = tests;

  UIDevice *device = UIDevice.currentDevice;
  const std::string os = std::string(device.systemName.UTF8String) + " " + device.systemVersion.UTF8String;
  json host = parbench::describe_host();
  host["machine"]["os"] = os;
  json device_doc = {{"model", hardware_model()}, {"os", os}};
  // Since iOS 16 UIDevice.name is the generic model name ("iPhone") unless the app holds the
  // user-assigned-device-name entitlement; only a real name is worth recording.
  if (device.name.length && ![device.name isEqualToString:device.model]) device_doc["name"] = device.name.UTF8String;
  json runtime = {{"name", "parbench-ios"}, {"version", PARBENCH_VERSION}, {"bundle", kBundle}};
  json run_env = {{"ios", device.systemVersion.UTF8String}, {"bundle", kBundle}, {"transport", transport_kind}};
#if defined(PARBENCH_WITH_LIBTORCH_LITE)
  runtime["libtorch_lite"] = parbench::libtorch_version();
  run_env["libtorch_lite"] = parbench::libtorch_version();
#endif
  if (!parbench::executorch_version().empty()) {
    runtime["executorch"] = parbench::executorch_version();
    run_env["executorch"] = parbench::executorch_version();
  }
  _run = {
      {"source", "device"},
      {"created_utc", parbench::utc_now_iso()},
      {"machine", host["machine"]},
      {"device", device_doc},
      {"runtime", runtime},
      {"commit", env(vars, @"PARBENCH_COMMIT").empty() ? json(nullptr) : json(env(vars, @"PARBENCH_COMMIT"))},
      {"env", run_env},
      {"fixture_set", {{"manifest_sha256", parbench::sha256_hex(manifest_text)},
                       {"created_utc", _manifest.created_utc}, {"from", _fixtures->describe()}}},
  };
  _runId = [NSString stringWithUTF8String:env(vars, @"PARBENCH_RUN_ID", parbench::new_run_id(std::string("ios-") + kBundle)).c_str()];
  _sink = std::make_unique<parbench::ResultSink>(_client.get(), _runId.UTF8String, 1000000);
}

- (NSArray<PBTestSpec *> *)tests {
  return _tests;
}

- (NSString *)runId {
  return _runId;
}

- (NSInteger)measureIterations {
  return _measureIterations;
}

- (BOOL)openRun:(NSError **)error {
  try {
    _sink->open(_run);
    return YES;
  } catch (const std::exception &e) {
    if (error) *error = make_error(e.what());
    return NO;
  }
}

- (NSData *)runTest:(PBTestSpec *)spec
           failures:(NSMutableArray<NSString *> *)failures
            measure:(void (^)(void (^)(void)))measure {
  json results = json::array();
  for (std::size_t i : spec.planIndices) {
    json r = parbench::run_case(_plan[i], _manifest, *_fixtures, _registry, _options, _hooks);
    if (!r["error"].is_null()) {
      [failures addObject:[NSString stringWithFormat:@"%s: %s", _plan[i].kase->id.c_str(),
                                                     r["error"].get<std::string>().c_str()]];
    }
    results.push_back(std::move(r));
  }
  // XCTest's own clock and memory metrics, on warm runs of the first case.
  const auto &first = _plan[spec.planIndices.front()];
  if (results[0]["error"].is_null()) {
    try {
      std::shared_ptr<parbench::ModelRunner> runner =
          parbench::load_case_runner(first, _manifest, *_fixtures, _registry, _options);
      __block std::vector<double> clock_ms;
      __block std::string run_error;
      measure(^{
        const auto t0 = std::chrono::steady_clock::now();
        try {
          runner->run();
        } catch (const std::exception &e) {
          run_error = e.what();
        }
        clock_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      });
      // XCTest runs the block iterationCount + 1 times and ignores the first run; so do we.
      json xctest = {{"xcresult_metrics", {"XCTClockMetric", "XCTMemoryMetric"}}, {"ignored_first_ms", nullptr}};
      if (!clock_ms.empty()) {
        xctest["ignored_first_ms"] = clock_ms.front();
        clock_ms.erase(clock_ms.begin());
      }
      xctest["iterations"] = clock_ms.size();
      xctest["clock_ms"] = clock_ms;
      results[0]["xctest"] = xctest;
      if (!run_error.empty()) [failures addObject:[NSString stringWithFormat:@"measure: %s", run_error.c_str()]];
    } catch (const std::exception &e) {
      [failures addObject:[NSString stringWithFormat:@"measure: %s", e.what()]];
    }
  }
  for (const auto &r : results) _sink->add(r);
  const json doc = {{"run_id", _runId.UTF8String}, {"run", _run}, {"results", results}};
  const std::string text = doc.dump(1);
  return [NSData dataWithBytes:text.data() length:text.size()];
}

- (BOOL)postResults:(NSError **)error {
  try {
    _sink->flush();
    return YES;
  } catch (const std::exception &e) {
    if (error) *error = make_error(e.what());
    return NO;
  }
}

- (BOOL)finishRun:(NSError **)error {
  _registry = parbench::RunnerRegistry();  // drops the Core ML runner's unzipped and compiled packages
  try {
    _sink->finish();
    return YES;
  } catch (const std::exception &e) {
    if (error) *error = make_error(e.what());
    return NO;
  }
}

@end
