import json

import numpy as np
import pytest
import torch

from parbench import zoo
from parbench.errors import DegenerateOutputError, FixtureError
from parbench.fixtures import FixtureSet
from parbench.fixtures.build import build


def _tiny_spec():
    return zoo.ModelSpec("tiny", "generic", lambda: torch.nn.Conv2d(3, 4, 3), (32, 48), 32)


@pytest.fixture()
def fixture_set(tmp_path):
    spec = _tiny_spec()
    torch.manual_seed(0)
    module = spec.resolve_factory()().eval()
    return build(tmp_path / "set", [spec], lambda s: module, cases_per_size=2), module


def test_round_trip_and_goldens(fixture_set):
    fs, module = fixture_set
    again = FixtureSet.open(fs.root)
    cases = again.cases("tiny", 48)
    assert [c.id for c in cases] == ["tiny/48/0", "tiny/48/1"]
    with torch.no_grad():
        expected = module(torch.from_numpy(cases[1].inputs["image"])).numpy()
    np.testing.assert_array_equal(cases[1].golden["output"], expected)
    # case 0 is the real photo, case 1 a different (seeded) variation of it
    assert not np.array_equal(cases[0].inputs["image"], cases[1].inputs["image"])
    assert again.sizes("tiny") == [32, 48]


def test_corrupt_tensor_is_refused_by_name(fixture_set):
    fs, _ = fixture_set
    rel = fs.manifest.models["tiny"].cases[0].inputs["image"]
    data = bytearray((fs.root / rel).read_bytes())
    data[100] ^= 0xFF
    (fs.root / rel).write_bytes(bytes(data))
    with pytest.raises(FixtureError, match="corrupt.*sha256") as err:
        FixtureSet.open(fs.root).cases("tiny", 32)
    assert rel in str(err.value)


def test_unknown_format_version_is_refused(fixture_set):
    fs, _ = fixture_set
    manifest = json.loads((fs.root / "manifest.json").read_text())
    manifest["format_version"] = 99
    (fs.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FixtureError, match="format_version 99.*reads only version 1"):
        FixtureSet.open(fs.root)


def test_missing_and_malformed_manifest(tmp_path):
    with pytest.raises(FixtureError, match="parbench fixtures"):
        FixtureSet.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(FixtureError, match="not valid JSON"):
        FixtureSet.open(tmp_path)


def test_degenerate_golden_outputs_are_refused(tmp_path):
    spec = zoo.ModelSpec("flat", "generic", lambda: torch.nn.Conv2d(3, 2, 1), (16,), 16)

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean() * 1e-9 + torch.zeros(1, 8)

    with pytest.raises(DegenerateOutputError, match="'flat'.*degenerate"):
        build(tmp_path / "s", [spec], lambda s: Flat())


def test_fixtures_command_builds_a_set_with_artifacts(tmp_path):
    """`parbench fixtures` as the README types it: goldens plus one exported artifact in the set."""
    from click.testing import CliRunner

    from parbench.cli import main

    out = tmp_path / "set"
    result = CliRunner().invoke(
        main,
        [
            "fixtures",
            "--models",
            "tiny_classifier",
            "--sizes",
            "224",
            "--cases",
            "1",
            "--artifacts",
            "torchscript",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    fs = FixtureSet.open(out)
    entry = fs.model("tiny_classifier")
    assert [c for c in entry.cases] and list(entry.artifacts) == ["torchscript"]
    art = entry.artifacts["torchscript"][0]
    assert (out / art.path).is_file() and art.format and len(art.sha256) == 64
