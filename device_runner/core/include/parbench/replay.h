// Replaying a fixture set: which cases to run, running one, the result JSON, the run document,
// and posting results in batches. The CLI and the iOS XCTest bridge both drive these.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/collector.h"
#include "parbench/fixtures.h"
#include "parbench/manifest.h"
#include "parbench/runner.h"

namespace parbench {

struct ReplayOptions {
  std::vector<std::string> models;    // empty: every model
  std::vector<std::string> variants;  // empty: every variant some runner can run
  std::vector<int> sizes;             // empty: every size
  std::vector<std::string> compute_units;  // empty: each runner's full list
  int rounds = 10;
  int warmup = 3;
  int threads = 1;
  int run_index = 0;
  std::string dump_dir;  // when set, candidate outputs are written there as raw tensors
};

// Platform facts the core cannot know by itself (the iOS bridge supplies its own).
struct PlatformHooks {
  std::function<std::optional<std::string>()> thermal_state;  // nominal|fair|serious|critical, or none
  std::function<void()> reset_peak_memory;                    // before each case, where possible
  std::function<void()> sample_memory;                        // at the end of each stage of a case
  std::function<std::optional<double>()> peak_memory_mb;
  std::string memory_measure;  // what peak_memory_mb means here, recorded as extra.memory_measure
};
PlatformHooks default_platform_hooks();

struct PlannedCase {
  const ModelEntry* model = nullptr;
  std::string variant;
  const CaseEntry* kase = nullptr;
  const ArtifactEntry* artifact = nullptr;  // nullptr: see problem
  std::string compute_units;                // empty: no such axis (JSON null)
  std::string problem;                      // non-empty: the case cannot run, reported as an error result

  // "{model}-{variant}-{size}[-{compute_units}]", the test/result id.
  std::string test_id() const;
};

// Every case to run, in manifest order: model, variant, size, case, compute units.
// A variant asked for by name that no runner here can run becomes a case with a problem;
// variants nobody asked for are skipped when no runner handles their format.
std::vector<PlannedCase> plan_cases(const Manifest& manifest, const RunnerRegistry& registry,
                                    const ReplayOptions& options);

// Runs one case and returns its result JSON (collector Result schema). Never throws for a
// failing case: the failure is the result's "error", with whatever was measured before it.
nlohmann::json run_case(const PlannedCase& pc, const Manifest& manifest, FixtureSource& source,
                        const RunnerRegistry& registry, const ReplayOptions& options, const PlatformHooks& hooks);

// A runner for the case's artifact (RunnerError when the case has a problem).
std::unique_ptr<ModelRunner> make_runner(const PlannedCase& pc, const RunnerRegistry& registry,
                                         const ReplayOptions& options);
// The verified tensors of a case ({name: path} as in the manifest).
NamedTensors read_case_tensors(const std::vector<std::pair<std::string, std::string>>& paths, const Manifest& manifest,
                               FixtureSource& source);
// A runner with the case's artifact loaded and its inputs set, ready for run(): what an
// XCTest measure block needs. Throws on any failure.
std::unique_ptr<ModelRunner> load_case_runner(const PlannedCase& pc, const Manifest& manifest, FixtureSource& source,
                                              const RunnerRegistry& registry, const ReplayOptions& options);

// Helpers for the run document.
std::string utc_now_iso();
std::string new_run_id(const std::string& prefix = "dev");
// uname-based description: {"machine": {...}, "device": {...}}.
nlohmann::json describe_host();

// Collects results and posts them to the collector in batches, with the same run id on every
// retry. Without a client, results are only kept (offline mode).
class ResultSink {
 public:
  ResultSink(CollectorClient* client, std::string run_id, std::size_t batch_size = 16);
  void open(const nlohmann::json& run_doc);  // PUT the run (idempotent)
  void add(const nlohmann::json& result);    // posts when a batch is full
  void flush();
  // Flushes, then marks the run complete with the number of results it holds.
  nlohmann::json finish(const std::string& status = "complete", const std::string& message = "");
  const std::vector<nlohmann::json>& results() const { return all_; }
  const std::string& run_id() const { return run_id_; }
  int posted() const { return posted_; }

 private:
  CollectorClient* client_;
  std::string run_id_;
  std::size_t batch_size_;
  std::vector<nlohmann::json> pending_;
  std::vector<nlohmann::json> all_;
  int posted_ = 0;
};

}  // namespace parbench
