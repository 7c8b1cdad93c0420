// Core ML runner for .mlpackage artifacts, with MLModelConfiguration.computeUnits as an axis.
#pragma once

#include "parbench/runner.h"

namespace parbench {

// cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all
const std::vector<std::string>& coreml_compute_units();
void register_coreml_runner(RunnerRegistry& registry);

}  // namespace parbench
