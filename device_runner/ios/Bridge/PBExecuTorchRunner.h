// ExecuTorch runner for .pte artifacts (backends registered by force-loading them).
#pragma once

#include "parbench/runner.h"

namespace parbench {

void register_executorch_runner(RunnerRegistry& registry);

}  // namespace parbench
