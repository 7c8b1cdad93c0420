"""Will the phone load it? The ExecuTorch programs (.pte) of a fixture set against the ExecuTorch
release the app links: the program's file identifier, and the exporter's version against the app's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from parbench.errors import DeviceError
from parbench.records import manifest as records_manifest

# The flatbuffer file identifier ExecuTorch 1.x programs carry (schema/program.fbs), bytes 4..8.
PTE_IDENTIFIER = b"ET12"


def _version(text: str) -> Version | None:
    try:
        return Version(text.split("+", 1)[0])
    except InvalidVersion:
        return None


def pte_rows(fixture_dir: Path | str, app_executorch: str) -> list[dict[str, Any]]:
    """One row per .pte artifact, with its status:

    * ``ok``;
    * ``newer`` (a warning): written by a newer ExecuTorch than the app links;
    * ``unknown`` (a warning): the set does not say which ExecuTorch wrote it;
    * ``failed``: the file is missing, or it is not a program this runtime reads.
    """
    fixture_dir = Path(fixture_dir)
    app = _version(app_executorch)
    if app is None:
        raise DeviceError(f"app ExecuTorch version {app_executorch!r} is not a version like 1.5.1")
    manifest = records_manifest.read(fixture_dir)
    set_exporter = manifest.generator.get("executorch")
    rows = []
    for model, entry in sorted(manifest.models.items()):
        for variant, arts in sorted(entry.artifacts.items()):
            for art in arts:
                if art.format != "pte":
                    continue
                exporter = art.meta.get("executorch") or set_exporter
                row = {
                    "model": model,
                    "variant": variant,
                    "path": art.path,
                    "exporter": exporter,
                    "app_executorch": app_executorch,
                    "status": "ok",
                    "reason": "",
                }
                rows.append(row)
                path = fixture_dir / art.path
                if not path.is_file():
                    row.update(status="failed", reason=f"{art.path} is listed in the manifest but missing")
                    continue
                with path.open("rb") as f:
                    header = f.read(8)
                if header[4:8] != PTE_IDENTIFIER:
                    row.update(
                        status="failed",
                        reason=(
                            f"its program identifier is {header[4:8]!r}, not {PTE_IDENTIFIER!r}: ExecuTorch "
                            f"{app_executorch} refuses it; export it with executorch=={app_executorch}"
                        ),
                    )
                    continue
                written = _version(exporter) if isinstance(exporter, str) else None
                if written is None:
                    row.update(
                        status="unknown",
                        reason=(
                            "the fixture set does not record which ExecuTorch wrote it; rebuild it with "
                            "`parbench fixtures` (its manifest then records generator.executorch)"
                        ),
                    )
                elif Version(written.base_version) > Version(app.base_version):
                    row.update(
                        status="newer",
                        reason=(
                            f"written by ExecuTorch {exporter}, newer than the app's {app_executorch}: a "
                            "runtime is not promised to load programs from a newer exporter; export with "
                            f"executorch=={app_executorch}, or move the app to swiftpm-{written.base_version}"
                        ),
                    )
    return rows
