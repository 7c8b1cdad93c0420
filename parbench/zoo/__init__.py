"""The model zoo: specs (what a model is and how it is checked), built-in networks, user models from
TOML, example inputs from a real photo, and deterministic weights.

- :mod:`.spec`      ModelSpec, InputSpec, the registry and tier selection
- :mod:`.builtin`   the built-in models and their declared known failures
- :mod:`.config`    user models from a TOML file
- :mod:`.networks`  networks written for the zoo, and wrappers around torchvision's
- :mod:`.inputs`    the photo, its seeded variations, example and calibration inputs
- :mod:`.weights`   seeded weights, batch-norm recalibration, the model's code digest
- :mod:`.torchvision_shim`  importing torchvision where its C++ extension does not match torch
"""

from parbench.errors import ConfigError
from parbench.zoo.inputs import calibration_inputs, example_inputs
from parbench.zoo.spec import TASKS, TIERS, InputSpec, ModelSpec, registry, select
from parbench.zoo.weights import code_digest, load_model, recalibrate_batchnorm

__all__ = [
    "TASKS",
    "TIERS",
    "ConfigError",
    "InputSpec",
    "ModelSpec",
    "calibration_inputs",
    "code_digest",
    "example_inputs",
    "load_model",
    "recalibrate_batchnorm",
    "registry",
    "select",
]
