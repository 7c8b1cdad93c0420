"""The artifact cache under concurrent writers (pytest-xdist workers, hosts sharing a disk)."""

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from parbench.backends.base import Artifact
from parbench.errors import ExportError
from parbench.run.cache import ArtifactCache

KEY = {"model": "m", "variant": "v", "options": {"x": 1}}


def _export_slowly(root: str, log: str, barrier) -> str:
    cache = ArtifactCache(root)

    def export(out: Path) -> Artifact:
        with open(log, "a") as f:
            f.write("export\n")
        path = out.with_suffix(".bin")
        with open(path, "wb") as f:  # written in pieces, slowly: a reader must never see half of it
            for _ in range(20):
                f.write(b"x" * 50_000)
                time.sleep(0.01)
        return Artifact("v", path, "bin", None, {"note": "slow"})

    barrier.wait()
    outcome = cache.get_or_export("m", "v", "any", KEY, export)
    return f"{outcome.status} {outcome.artifact.path.stat().st_size}"


def test_concurrent_writers_export_once_and_never_see_torn_entries(tmp_path):
    ctx = mp.get_context("spawn")
    n = 4
    with ctx.Manager() as manager, ctx.Pool(n) as pool:  # the manager's process ends with the test
        barrier = manager.Barrier(n)
        results = pool.starmap(_export_slowly, [(str(tmp_path), str(tmp_path / "log"), barrier)] * n)
    assert (tmp_path / "log").read_text().count("export") == 1
    assert sorted(r.split()[0] for r in results) == ["exported"] + ["hit"] * (n - 1)
    assert {r.split()[1] for r in results} == {"1000000"}
    leftovers = [p for p in (tmp_path / "artifacts" / "m").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_leftovers_of_a_killed_writer_are_ignored_and_entry_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def export(out: Path) -> Artifact:
        calls.append(out)
        out.with_suffix(".bin").write_bytes(b"model")
        return Artifact("v", out.with_suffix(".bin"), "bin", None)

    first = cache.get_or_export("m", "v", "any", KEY, export)
    folder = first.artifact.path.parent
    # a writer killed mid-export leaves a hidden temp folder; one killed mid-rename cannot exist
    (folder.parent / f".{folder.name}.tmp-999-dead").mkdir()
    (folder / "entry.json").write_text("{truncated")
    again = cache.get_or_export("m", "v", "any", KEY, export)
    assert again.status.startswith("rebuilt") and "unreadable entry" in again.status
    assert len(calls) == 2 and again.artifact.path.read_bytes() == b"model"
    assert cache.get_or_export("m", "v", "any", KEY, export).status == "hit"


def test_export_failures_are_cached_with_the_converter_message(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def failing(out: Path) -> Artifact:
        calls.append(1)
        raise ExportError("converter says: unsupported op aten::weird")

    for _ in range(2):
        with pytest.raises(ExportError, match="aten::weird"):
            cache.get_or_export("m", "v", "any", KEY, failing)
    assert len(calls) == 1
    entry = next((tmp_path / "artifacts" / "m").glob("v-any-*/entry.json"))
    assert "aten::weird" in json.loads(entry.read_text())["error"]
    # a different key (new converter version, say) tries again
    with pytest.raises(ExportError):
        cache.get_or_export("m", "v", "any", dict(KEY, options={"x": 2}), failing)
    assert len(calls) == 2


def _named_export(calls: list, input_names: list[str], output_names: list[str]):
    def export(out: Path) -> Artifact:
        calls.append(out)
        path = out.with_suffix(".bin")
        path.write_bytes(b"model")
        return Artifact("v", path, "bin", [32], {"exporter": "x"}, None, input_names, output_names)

    return export


def test_names_round_trip_and_export_time_is_recorded_once(tmp_path):
    cache = ArtifactCache(tmp_path)
    export = _named_export([], ["image", "mask"], ["a", "b.c"])
    first = cache.get_or_export("m", "v", "any", KEY, export)
    hit = cache.get_or_export("m", "v", "any", KEY, export)
    assert (first.status, hit.status) == ("exported", "hit")
    for outcome in (first, hit):
        art = outcome.artifact
        assert (art.input_names, art.output_names, art.sizes) == (["image", "mask"], ["a", "b.c"], [32])
        assert set(art.meta) == {"exporter", "export_seconds", "export_stages", "sha256"}
        assert isinstance(art.meta["export_seconds"], float)
    assert hit.artifact.meta["export_seconds"] == first.artifact.meta["export_seconds"]


def test_an_entry_written_without_names_is_rebuilt_not_misread(tmp_path):
    """Entries of an older parbench kept the names in meta["inputs"]/meta["outputs"]."""
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    export = _named_export(calls, ["image"], ["output"])
    entry = cache.get_or_export("m", "v", "any", KEY, export).artifact.path.parent / "entry.json"
    record = json.loads(entry.read_text())
    del record["input_names"], record["output_names"]
    record["meta"] = {"inputs": ["image"], "outputs": ["output"], "export_s": 0.1}
    entry.write_text(json.dumps(record))
    again = cache.get_or_export("m", "v", "any", KEY, export)
    assert again.status == "rebuilt (entry written by an older parbench (no input and output names))"
    assert len(calls) == 2
    assert (again.artifact.input_names, again.artifact.output_names) == (["image"], ["output"])
    assert "inputs" not in again.artifact.meta and "export_s" not in again.artifact.meta
