"""Export once, lower many: the forms that lower from one ``torch.export`` program share it through
the request's program folder, and the artifacts are the same as when each form exports its own."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support.forms import make_request
from test_one_artifact_all_sizes import SIZES, TinyDetector
from torch import nn

from parbench.backends import executorch, export_support, get_backend
from parbench.backends.export_support import shared_program


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def _export_counting(calls: list[int]):
    def make(notes: dict) -> torch.export.ExportedProgram:
        calls.append(1)
        notes["size_oblivious"] = True
        torch.manual_seed(0)
        return torch.export.export(_Net().eval(), (torch.randn(1, 3, 8, 8),))

    return make


def test_the_first_form_makes_and_saves_the_program_the_next_loads_it_with_its_notes(photo, tmp_path) -> None:
    req = dataclasses.replace(make_request(_Net().eval(), photo, 16, [16]), programs=tmp_path / "programs")
    calls: list[int] = []
    first_meta: dict = {}
    first = shared_program(req, "flat-static16", _export_counting(calls), first_meta)
    second_meta: dict = {}
    second = shared_program(req, "flat-static16", _export_counting(calls), second_meta)
    assert calls == [1]  # made once
    assert first_meta["program"].startswith("made and shared") and second_meta["program"].startswith("shared")
    assert second_meta["size_oblivious"] is True  # the maker's notes travel with the program
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(first.module()(x), second.module()(x))
    assert json.loads((tmp_path / "programs" / "flat-static16.json").read_text()) == {"size_oblivious": True}


def test_a_torn_program_file_is_made_again_not_used(photo, tmp_path) -> None:
    req = dataclasses.replace(make_request(_Net().eval(), photo, 16, [16]), programs=tmp_path)
    calls: list[int] = []
    shared_program(req, "p", _export_counting(calls), {})
    (tmp_path / "p.pt2").write_bytes(b"not a program")
    meta: dict = {}
    ep = shared_program(req, "p", _export_counting(calls), meta)
    assert calls == [1, 1] and meta["program"].startswith("made and shared")
    assert isinstance(ep, torch.export.ExportedProgram)


def test_without_a_program_folder_each_form_exports_its_own(photo) -> None:
    req = make_request(_Net().eval(), photo, 16, [16])
    calls: list[int] = []
    shared_program(req, "p", _export_counting(calls), {})
    shared_program(req, "p", _export_counting(calls), {})
    assert calls == [1, 1]


def test_executorch_int8_lowers_from_the_fp32_forms_program_and_makes_the_same_pte(
    photo, tmp_path, monkeypatch
):
    """The int8 form re-exports only its quantized graph when the fp32 form's program is shared;
    its .pte is byte for byte the one it makes alone.  The size-oblivious note of the shared
    program carries over, so the int8 artifact still serves every size."""
    torch.manual_seed(0)
    model = TinyDetector(copy_permuted=True).eval()
    req = dataclasses.replace(make_request(model, photo, SIZES[0], SIZES), programs=tmp_path / "programs")
    get_backend("executorch_fp32").export(req, tmp_path / "fp32")

    exports: list[int] = []
    real_export = export_support._flat_export

    def counting(*args, **kwargs):
        exports.append(1)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_support, "_flat_export", counting)
    int8 = get_backend("executorch_int8")
    shared = int8.export(req, tmp_path / "int8-shared")
    assert exports == [], "the int8 form exported the float model again instead of loading it"
    assert shared.sizes is None and shared.meta["size_oblivious"] is True
    alone = int8.export(dataclasses.replace(req, programs=None), tmp_path / "int8-alone")
    assert exports == [1]
    assert shared.path.read_bytes() == alone.path.read_bytes()


@pytest.mark.parametrize("form", ["executorch_fp32", "executorch_int8"])
def test_a_second_export_of_the_same_form_loads_its_program(form, photo, tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    req = dataclasses.replace(
        make_request(_Net().eval(), photo, 32, [32, 48]), programs=tmp_path / "programs"
    )
    first = get_backend(form).export(req, tmp_path / "a")
    monkeypatch.setattr(export_support, "_flat_export", lambda *a, **k: pytest.fail("exported again"))
    monkeypatch.setattr(
        executorch._ExecuTorchBase, "_quantize", lambda *a, **k: pytest.fail("quantized again")
    )
    second = get_backend(form).export(req, tmp_path / "b")
    assert second.meta["program"].startswith("shared")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_core_mls_torch_export_frontend_converts_the_program_the_executorch_forms_made(
    photo, tmp_path, monkeypatch
):
    from support.forms import compare

    torch.manual_seed(0)
    model = _Net().eval()
    req = dataclasses.replace(make_request(model, photo, 32, [32, 48]), programs=tmp_path / "programs")
    get_backend("executorch_fp32").export(req, tmp_path / "et")
    monkeypatch.setattr(export_support, "_flat_export", lambda *a, **k: pytest.fail("exported again"))
    backend = get_backend("coreml_fp32", frontend="torch.export")
    art = backend.export(req, tmp_path / "ml")
    assert art.meta["frontend"] == "torch.export", art.meta["notes"]  # not the trace fallback
    session = backend.load(art)
    for size in (32, 48):
        (m,) = compare(session, model, photo, size).values()
        assert m["rel_l2"] < 1e-5, (size, m)
