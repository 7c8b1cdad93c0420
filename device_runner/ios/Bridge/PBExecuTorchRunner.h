// ExecuTorch runner for .pte artifacts (backends registered by force-loading them).
#pragma once

#include <string>

#include "parbench/runner.h"

namespace parbench {

// Registers "pte" when built with ExecuTorch (PARBENCH_WITH_EXECUTORCH); otherwise nothing.
void register_executorch_runner(RunnerRegistry& registry);
// The ExecuTorch release the app links (PARBENCH_EXECUTORCH_VERSION); "" when built without it.
std::string executorch_version();

}  // namespace parbench
