"""``pytest bench/ --instructions``: after the timing, one valgrind process counts the timed cases'
instructions per call (a second one the quantized_int8 cases; :mod:`parbench.run.instructions`)
into their ``extra_info["instructions"]``.

--instructions         count the host forms' timed calls under callgrind (1 thread)
--instr-sizes SIZES    smallest (default: each model's smallest size), all, or a list like 224,256
--instr-calls N        counted calls per case, after the first call and 2 uncounted ones (default 1)
--instr-no-onednn      count torch's fp32 kernels with oneDNN off (its JIT code runs ~10x slower
                       under valgrind); the counts are then labelled and compared only among themselves
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parbench.run import instructions as ins


def add_options(group: Any) -> None:
    group.addoption(
        "--instructions",
        action="store_true",
        help="also count instructions per call under valgrind's callgrind (host forms, 1 thread)",
    )
    group.addoption(
        "--instr-sizes",
        default=ins.DEFAULT_INSTR_SIZES,
        metavar="SIZES",
        help="sizes to count: smallest (each model's smallest; default), all, or a list like 224,256",
    )
    group.addoption(
        "--instr-calls", type=int, default=ins.DEFAULT_CALLS, metavar="N", help="counted calls per case"
    )
    group.addoption(
        "--instr-no-onednn",
        action="store_true",
        help="count torch's fp32 forms with oneDNN off (much faster under valgrind; other kernels)",
    )


def _wanted(config: pytest.Config) -> bool:
    return bool(config.getoption("--instructions")) and config.getoption("--parbench-run-index") is None


def check_options(config: pytest.Config) -> list[str]:
    """Problems with the --instr options, before any timing is spent."""
    if not _wanted(config):
        return []
    try:
        ins.parse_instr_sizes(config.getoption("--instr-sizes"))
        ins.CountSettings(calls=config.getoption("--instr-calls"))
        ins.valgrind_version()
    except ins.InstructionsError as exc:
        return [str(exc)]
    return []


_RECORDS = pytest.StashKey[list]()


def count_into(config: pytest.Config, output_json: dict[str, Any], log: Any) -> None:
    """Count once per session (the plugin may write several documents) and merge into this one."""
    if not _wanted(config):
        return
    if _RECORDS not in config.stash:
        from parbench.pytest_plugins.parity import config_path

        sizes = config.getoption("sizes")
        harness = ins.HarnessSettings(
            config_path(config),
            config.getoption("parbench_cache"),
            tuple(int(x) for x in sizes.split(",") if x.strip()) if sizes else None,
            config.getoption("--threads"),
        )
        out = getattr(config.option, "benchmark_json", None) or Path("reports") / "bench" / "bench.json"
        settings = ins.CountSettings(
            calls=config.getoption("--instr-calls"), onednn=not config.getoption("--instr-no-onednn")
        )
        config.stash[_RECORDS] = ins.count_for_benchmark_json(
            output_json,
            harness,
            settings,
            ins.parse_instr_sizes(config.getoption("--instr-sizes")),
            workdir=Path(str(out)).with_suffix(".instructions"),
            log=log,
        )
    else:
        ins.merge_into_benchmark_json(output_json, config.stash[_RECORDS])
