// LibTorch runners: TorchScript (.pt, torch::jit::load) and the lite interpreter
// (.ptl, torch::jit::_load_for_mobile). Built wherever libtorch is: Linux against the torch
// wheel; iOS against the LibTorch-Lite pod (lite interpreter only, PARBENCH_LITE_ONLY).
#pragma once

#include <string>

#include "parbench/runner.h"

namespace parbench {

// Registers "ptl" (and "pt" unless built lite-only) in the registry.
void register_libtorch_runners(RunnerRegistry& registry);

// "2.13.0" — the version the runners were compiled against ("unknown" if the headers do not say).
std::string libtorch_version();

}  // namespace parbench
