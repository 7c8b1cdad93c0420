// The small interface every model runtime implements: LibTorch (.pt), the lite interpreter
// (.ptl) here in the core; ExecuTorch (.pte) and Core ML (.mlpackage) in the iOS bridge.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/fixtures.h"
#include "parbench/tensor.h"

namespace parbench {

struct RunnerOptions {
  int threads = 1;
  std::string compute_units;              // Core ML only: cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all
  std::vector<std::string> input_names;   // the model's inputs, in argument order (manifest)
  std::vector<std::string> output_names;  // parbench's names for positional outputs (manifest)
  nlohmann::json artifact_meta = nlohmann::json::object();  // the manifest's meta of the artifact
};

// The clock runs around compile(), load() and run() only: conversions stay outside it.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Names what actually executes the artifact, e.g. "lite_interpreter", "libtorch_jit".
  virtual std::string executor() const = 0;
  // Untimed work on the artifact before compile() (unpacking an archive, checking its hash).
  virtual void prepare(const LocalFile& artifact) { (void)artifact; }
  // Runtimes that compile an artifact before loading it (Core ML) do it here and return true;
  // the time is reported as compile_ms. Others, and a runtime reusing an earlier compile of
  // the same artifact, return false (compile_ms stays null).
  virtual bool compile(const LocalFile& artifact) {
    (void)artifact;
    return false;
  }
  virtual void load(const LocalFile& artifact) = 0;
  // Converts inputs to the runtime's own tensors once, before the timed runs.
  virtual void set_inputs(const NamedTensors& inputs) = 0;
  // One inference on the inputs set last; keeps the runtime's outputs.
  virtual void run() = 0;
  // The last run's outputs, flattened and named the parbench way (output, output_0, keys).
  virtual NamedTensors outputs() = 0;
  // Facts about how the runtime ran the case (threads it really used, a reused compile...),
  // recorded as the result's extra.runner.
  virtual nlohmann::json details() const { return nlohmann::json::object(); }
};

using RunnerFactory = std::function<std::unique_ptr<ModelRunner>(const RunnerOptions&)>;

struct RunnerKind {
  RunnerFactory make;
  std::vector<std::string> compute_units;  // empty: the runtime has no such axis
};

// Maps artifact formats ("pt", "ptl", "pte", "mlpackage") to the runtime that runs them.
class RunnerRegistry {
 public:
  void add(const std::string& format, RunnerKind kind) { kinds_[format] = std::move(kind); }
  const RunnerKind* find(const std::string& format) const {
    auto it = kinds_.find(format);
    return it == kinds_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> formats() const {
    std::vector<std::string> out;
    for (const auto& [format, kind] : kinds_) out.push_back(format);
    return out;
  }

 private:
  std::map<std::string, RunnerKind> kinds_;
};

}  // namespace parbench
