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
#include "parbench/libtorch_runner.h"
#include "parbench/manifest.h"
#include "parbench/replay.h"
#include "parbench/sha256.h"

#ifndef PARBENCH_VERSION
#define PARBENCH_VERSION "0.1.0"
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
  std::unique_ptr<parbench::URLSessionTransport> _transport;
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
  const std::string url = env(vars, @"PARBENCH_COLLECTOR");
  const std::string token = env(vars, @"PARBENCH_TOKEN");
  std::string fixtures_dir = env(vars, @"PARBENCH_FIXTURES_DIR");
  if ((url.empty() || token.empty()) && fixtures_dir.empty()) {
    throw std::runtime_error(
        "neither PARBENCH_COLLECTOR + PARBENCH_TOKEN nor PARBENCH_FIXTURES_DIR is set: run the tests with "
        "TEST_RUNNER_PARBENCH_COLLECTOR=http://<mac>:8765 TEST_RUNNER_PARBENCH_TOKEN=... xcodebuild test ..., "
        "or copy a fixture set into the app's Documents and pass TEST_RUNNER_PARBENCH_FIXTURES_DIR=<folder>");
  }
  if (!fixtures_dir.empty() && fixtures_dir[0] != '/') {  // relative to the host app's Documents
    NSString *docs = NSSearchPathForDirectoriesInDomains(NSDocumentDirectory, NSUserDomainMask, YES).firstObject;
    fixtures_dir = std::string(docs.UTF8String) + "/" + fixtures_dir;
  }
  _options.rounds = std::stoi(env(vars, @"PARBENCH_ROUNDS", "10"));
  _options.warmup = std::stoi(env(vars, @"PARBENCH_WARMUP", "3"));
  _options.threads = std::stoi(env(vars, @"PARBENCH_THREADS", "1"));
  _options.models = split(env(vars, @"PARBENCH_MODELS"));
  _options.variants = split(env(vars, @"PARBENCH_VARIANTS"));
  for (const auto &s : split(env(vars, @"PARBENCH_SIZES"))) _options.sizes.push_back(std::stoi(s));
  _options.compute_units = split(env(vars, @"PARBENCH_COMPUTE_UNITS"));
  _measureIterations = std::stoi(env(vars, @"PARBENCH_MEASURE_ITERATIONS", "5"));

  if (!url.empty() && !token.empty()) {
    _transport = std::make_unique<parbench::URLSessionTransport>();
    _client = std::make_unique<parbench::CollectorClient>(*_transport, url, token);
    _client->health();
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

  parbench::register_libtorch_runners(_registry);  // .ptl (LibTorch-Lite)
  parbench::register_executorch_runner(_registry);  // .pte
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
  _run = {
      {"source", "device"},
      {"created_utc", parbench::utc_now_iso()},
      {"machine", host["machine"]},
      {"device", {{"model", hardware_model()}, {"os", os}, {"name", device.name.UTF8String}}},
      {"runtime", {{"name", "parbench-ios"}, {"version", PARBENCH_VERSION},
                   {"libtorch_lite", parbench::libtorch_version()}}},
      {"commit", env(vars, @"PARBENCH_COMMIT").empty() ? json(nullptr) : json(env(vars, @"PARBENCH_COMMIT"))},
      {"env", {{"libtorch_lite", parbench::libtorch_version()}, {"ios", device.systemVersion.UTF8String}}},
      {"fixture_set", {{"manifest_sha256", parbench::sha256_hex(manifest_text)},
                       {"created_utc", _manifest.created_utc}, {"from", _fixtures->describe()}}},
  };
  _runId = [NSString stringWithUTF8String:env(vars, @"PARBENCH_RUN_ID", parbench::new_run_id("ios")).c_str()];
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
      results[0]["xctest"] = {{"metrics", {"XCTClockMetric", "XCTMemoryMetric"}},
                              {"iterations", clock_ms.size()},
                              {"clock_ms", clock_ms}};
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
  try {
    _sink->finish();
    return YES;
  } catch (const std::exception &e) {
    if (error) *error = make_error(e.what());
    return NO;
  }
}

@end
