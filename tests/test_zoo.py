import textwrap

import pytest
import torch

from parbench import zoo
from parbench.backends.base import flatten_outputs


def test_tiers():
    reg = zoo.registry()
    assert [s.name for s in zoo.select(reg, "smoke")] == ["tiny_classifier", "tiny_generator"]
    default = {s.name: s for s in zoo.select(reg, "default")}
    assert set(default) == {
        "mobilenet_v2",
        "deeplabv3_mobilenet_v3",
        "animegan",
        "ssdlite_mobilenet_v3",
        "small_vit",
    }
    assert all(s.sizes == (256, 300, 400, 512, 640) for s in default.values())
    assert {"resnet50", "deeplabv3_resnet101"} <= {s.name for s in zoo.select(reg, "full")}
    assert {s.task for s in default.values()} == {
        "classification",
        "segmentation",
        "image-to-image",
        "detection",
    }


def test_batchnorm_recalibration_gives_realistic_outputs(tmp_path):
    spec = zoo.registry()["tiny_classifier"]
    torch.manual_seed(0)
    raw = spec.resolve_factory()().eval()  # default init, untouched statistics
    x = torch.from_numpy(zoo.example_inputs(spec, 224)["image"])
    with torch.no_grad():
        raw_std = raw(x).std().item()
        built = zoo.load_model(spec, tmp_path)
        std = built(x).std().item()
    assert raw_std < 1e-4  # vanishing activations: every comparison would pass trivially
    assert std > 1e-2
    # deterministic, and served from the on-disk cache the second time
    again = zoo.load_model(spec, tmp_path)
    assert list((tmp_path / "models").glob("tiny_classifier-*.pt"))
    for a, b in zip(built.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_default_tier_outputs_are_named_as_apps_use_them(tmp_path):
    reg = zoo.registry()
    seg = zoo.load_model(reg["deeplabv3_mobilenet_v3"], tmp_path)
    det = zoo.load_model(reg["ssdlite_mobilenet_v3"], tmp_path)
    x = torch.from_numpy(zoo.example_inputs(reg["mobilenet_v2"], 128)["image"])
    with torch.no_grad():
        assert list(flatten_outputs(seg(x))) == ["out"]
        out = flatten_outputs(det(x))
    assert list(out) == ["boxes", "scores"] and out["boxes"].shape[-1] == 4 and out["scores"].shape[-1] == 91


def _write(tmp_path, toml, code="def build():\n    import torch\n    return torch.nn.Conv2d(3, 4, 3)\n"):
    # a module name of its own per test: Python caches imported modules by name
    module = f"user_nets_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{module}.py").write_text(code)
    path = tmp_path / "models.toml"
    path.write_text(textwrap.dedent(toml).replace("user_nets", module))
    return path


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[models.a]\ntask = 'classification'\n", "model 'a'.*missing key 'factory'"),
        (
            "[models.a]\nfactory = 'no_such_pkg.x:build'\n",
            "model 'a'.*factory.*importing 'no_such_pkg.x' failed",
        ),
        ("[models.a]\nfactory = 'user_nets:nope'\n", "model 'a'.*no callable 'nope'"),
        ("[models.a]\nfactory = 'user_nets:build'\ntask = 'ocr'\n", "model 'a'.*key 'task'"),
        ("[models.a]\nfactory = 'user_nets:build'\nsizes = [0]\n", "model 'a'.*key 'sizes'"),
        (
            "[models.a]\nfactory = 'user_nets:build'\ninputs = [{name = 'x', shape = [1, 'big']}]\n",
            r"model 'a'.*key 'inputs\[0\].shape'",
        ),
        ("[models.a]\nfactory = 'user_nets:build'\ncolour = 1\n", "model 'a'.*unknown key.*colour"),
        (
            "[models.a]\nfactory = 'user_nets:build'\nweights = 'missing.pt'\n",
            "model 'a'.*key 'weights'.*no such file",
        ),
        ("[models.mobilenet_v2]\nfactory = 'user_nets:build'\n", "taken by a built-in"),
        ("[other]\n", "defines no models"),
    ],
)
def test_bad_config_entries_name_model_and_key(tmp_path, toml, message):
    with pytest.raises(zoo.ConfigError, match=message):
        zoo.registry(_write(tmp_path, toml))


def test_config_in_pyproject_and_user_defaults(tmp_path):
    (tmp_path / "pyproj_nets.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Conv2d(3, 4, 3)\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        "[tool.parbench.models.mine]\nfactory = 'pyproj_nets:build'\nsizes = [64, 96]\n"
        "[tool.parbench.models.mine.tolerances.onnx]\nrel_l2 = 1e-5\n"
    )
    reg = zoo.registry(tmp_path / "pyproject.toml")
    spec = reg["mine"]
    assert (
        spec.sizes == (64, 96) and spec.example_size == 64 and spec.tolerances == {"onnx": {"rel_l2": 1e-5}}
    )
    assert [s.name for s in zoo.select(reg)] == ["mine"]  # a config's models are the default selection
    module = zoo.load_model(spec, tmp_path)
    assert isinstance(module, torch.nn.Conv2d) and not module.training


def test_factory_that_raises_or_returns_wrong_type(tmp_path):
    code = "def boom():\n    raise ValueError('bad width')\ndef notmodule():\n    return 3\n"
    reg = zoo.registry(
        _write(
            tmp_path,
            "[models.a]\nfactory = 'user_nets:boom'\n[models.b]\nfactory = 'user_nets:notmodule'\n",
            code,
        )
    )
    with pytest.raises(zoo.ConfigError, match="model 'a'.*raised ValueError: bad width"):
        zoo.load_model(reg["a"], tmp_path)
    with pytest.raises(zoo.ConfigError, match="model 'b'.*returned int, not a torch.nn.Module"):
        zoo.load_model(reg["b"], tmp_path)
