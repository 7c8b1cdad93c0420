"""Instruction counts of each case's timed call, under valgrind's callgrind.

The wall clock of a shared machine moves by several percent between two processes running the same
code; the number of instructions the code executes does not.  This module counts them:

* **one valgrind process for many cases.**  Starting Python and importing torch under callgrind
  takes minutes, so a single child (``python -m parbench.run.instructions``, launched by
  :func:`count_instructions`) loads every case (model x variant x size) in turn through the same
  harness fixtures and artifacts as ``bench/``; the quantized_int8 cases, whose count depends on
  where earlier cases left the heap (``OWN_PROCESS_FORMS``), get a second child of their own;
* **collection only around the timed calls.**  valgrind starts with instrumentation on and
  collection off (``--instr-atstart=yes --collect-atstart=no``).  Per case, the session is loaded
  and warmed up uncounted (first call plus ``warmup`` calls, like the bench), then collection is
  switched on (``torch._C._valgrind_toggle``), ``calls`` calls are made, and collection is switched
  off and the counters dumped (``torch._C._valgrind_toggle_and_dump_stats``).  callgrind writes the
  dump ``<out>.<n>`` inside that client request, before it returns, so the child reads its own
  dump right away: the count belongs to the case without any bookkeeping across processes.
  Instrumentation stays on throughout: switching it (``callgrind_control -i``, through vgdb) made
  the counts wrong and callgrind's per-dump summary wrap around (docs/instructions.md);
* **one thread.**  torch intra-op threads, ONNX Runtime's intra-op pool and ExecuTorch's thread
  pool are set to 1 (and OMP/MKL through the environment).  valgrind runs threads one at a time;
  idle pool workers spinning for work would add instructions that depend on scheduling;
* ``PYTHONHASHSEED=0``: string hashing, and so dict and set layouts, are the same every process.

Counts depend on the CPU features the code sees: under valgrind, CPUID is valgrind's own
(for example AVX2 without AVX-512 on a host that has AVX-512), so every record carries the
valgrind version and the features torch detected inside the child.  Counts of two records are
comparable only when both agree.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError
from parbench.records.ids import CaseKey
from parbench.records.instructions import InstructionCount

# The forms that run on this host's own runtimes; Core ML forms run on a reference executor here.
HOST_FORMS = ("eager", "torchscript", "lite", "quantized_int8", "onnx", "executorch_fp32", "executorch_int8")
# Uncounted calls before the counted ones: the first call and 2 more, as the bench warms up.  One
# is not enough: TorchScript's profiling executor optimises the graph on a later call (a counted
# second call of tiny_classifier's TorchScript form was 327 M instructions against 38 M in steady
# state; docs/instructions.md).
DEFAULT_CALLS = 1
# Forms whose count depends on where earlier work left the heap: QNNPACK (quantized_int8) rebuilds
# a convolution's indirection buffer whenever its input tensor sits at another address than on the
# last call, and that rebuild is up to a tenth of the call.  After other forms have run in the same
# process the addresses differ from process to process (tiny_generator at 256 px: 1,053 M and
# 1,100 M instructions in two identical bench processes), while a process of their own gives the
# same count every time.  They are counted in a valgrind process of their own.
OWN_PROCESS_FORMS = ("quantized_int8",)
# Work left out of a count (and recorded as ``set_aside``): its amount depends on where the
# allocator put the activations, not on the model.  QNNPACK rebuilds a convolution's indirection
# buffer whenever its input sits at another address than on the last call.
SET_ASIDE_FUNCTIONS = ("pytorch_qnnp_indirection_init_",)
DEFAULT_WARMUP = 2
DEFAULT_INSTR_SIZES = "smallest"
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PARBENCH_INSTRUCTIONS_CHILD": "1",
}
EXTRA_KEYS = (
    "instructions",
    "instructions_total",
    "instructions_calls",
    "instructions_warmup_calls",
    "instructions_threads",
    "instructions_runtime_threads",
    "instructions_env",
    "instructions_process",
    "valgrind",
    "cpu_features",
)


class InstructionsError(ParbenchError, RuntimeError):
    """Counting cannot go ahead (valgrind missing, bad options, a broken child); the message says
    what was wrong and what to do."""


InstrCase = CaseKey  # one case of a counting session: model x variant x size


@dataclasses.dataclass(frozen=True)
class HarnessSettings:
    """What the child needs to build the same harness as the bench: the user config, the cache
    folder and the ``--sizes`` override (fixtures are keyed on a model's sizes)."""

    config_path: str | None = None
    cache_dir: str = ".parbench-cache"
    sizes: tuple[int, ...] | None = None
    threads: int = 1


@dataclasses.dataclass(frozen=True)
class CountSettings:
    calls: int = DEFAULT_CALLS
    warmup: int = DEFAULT_WARMUP
    valgrind: str = "valgrind"
    max_restarts: int = 2  # new valgrind processes after one died, for the cases still to count
    timeout_s: float | None = None  # per valgrind process
    keep_dumps: bool = False
    onednn: bool = True  # False: torch's fp32 kernels without oneDNN (its JIT code is slow under valgrind)

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise InstructionsError(f"calls must be >= 1, got {self.calls}")
        if self.warmup < 0:
            raise InstructionsError(f"warmup must be >= 0, got {self.warmup}")


@dataclasses.dataclass
class InstructionRecord:
    """One case and its count (``parbench.records.instructions.InstructionCount``)."""

    model: str
    variant: str
    size: int
    count: InstructionCount

    @property
    def case(self) -> InstrCase:
        return InstrCase(self.model, self.variant, int(self.size))

    @property
    def status(self) -> str:
        return self.count.status

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "size": self.size,
            "count": self.count.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstructionRecord:
        return cls(d["model"], d["variant"], int(d["size"]), InstructionCount.model_validate(d["count"]))


def _record(c: InstrCase, status: str, message: str = "", **count: Any) -> InstructionRecord:
    return InstructionRecord(
        c.model, c.variant, c.size, InstructionCount(status=status, message=message, **count)
    )


# ---------------------------------------------------------------------------------------------
# which cases: --instr-sizes


def parse_instr_sizes(value: str | None) -> str | tuple[int, ...]:
    """``smallest`` (default: each model's smallest size), ``all``, or a comma-separated list of
    sizes (a model is counted at those of its sizes that are in the list)."""
    text = (value or DEFAULT_INSTR_SIZES).strip().lower()
    if text in ("smallest", "all"):
        return text
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise InstructionsError(
            f"--instr-sizes takes 'smallest', 'all' or sizes like 224,256; got {value!r}"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise InstructionsError(f"--instr-sizes needs positive sizes, got {value!r}")
    return sizes


def select_cases(
    cases: Iterable[tuple[str, str, int]],
    policy: str | tuple[int, ...] = DEFAULT_INSTR_SIZES,
    variants: Sequence[str] = HOST_FORMS,
) -> list[InstrCase]:
    """The cases to count among ``cases`` (the bench selection): host forms only, at the sizes the
    policy picks.  ``smallest`` is taken per model over the sizes in the selection."""
    chosen = [InstrCase(m, v, int(s)) for m, v, s in cases if v in variants]
    if policy == "all":
        return chosen
    if policy == "smallest":
        smallest: dict[str, int] = {}
        for c in chosen:
            smallest[c.model] = min(smallest.get(c.model, c.size), c.size)
        return [c for c in chosen if c.size == smallest[c.model]]
    if isinstance(policy, tuple):
        return [c for c in chosen if c.size in policy]
    raise InstructionsError(f"unknown size policy {policy!r}; use 'smallest', 'all' or a tuple of sizes")


# ---------------------------------------------------------------------------------------------
# the parent: launch one valgrind child, collect its records


def valgrind_version(valgrind: str = "valgrind") -> str:
    exe = shutil.which(valgrind)
    if exe is None:
        raise InstructionsError(
            f"{valgrind!r} is not on PATH; install valgrind (Debian/Ubuntu: "
            "apt-get install -y valgrind) to count instructions"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    version = out.stdout.strip()
    if out.returncode != 0 or not version.startswith("valgrind"):
        raise InstructionsError(f"{exe} --version failed ({out.returncode}): {out.stderr.strip()[:300]}")
    return version


def valgrind_command(
    valgrind: str, callgrind_out: Path, log_file: Path, python: str, plan: Path, results: Path
) -> list[str]:
    return [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=yes",
        "--collect-atstart=no",  # collection toggled per case by the child
        "--dump-instr=no",
        "--dump-line=no",  # the dumps are read for their totals only
        f"--callgrind-out-file={callgrind_out}",
        f"--log-file={log_file}",
        python,
        "-m",
        "parbench.run.instructions",
        "--child",
        str(plan),
        "--results",
        str(results),
    ]


def _child_env() -> dict[str, str]:
    env = dict(os.environ, **CHILD_ENV)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this parbench package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def prepare(
    cases: Sequence[InstrCase], harness: HarnessSettings, log: Callable[[str], None] = lambda msg: None
) -> dict[InstrCase, InstructionRecord]:
    """Export (or find in the cache) every artifact and fixture natively, so the child under valgrind
    only loads; returns a record for each case that cannot be counted (skipped or failed)."""
    from parbench.errors import ExportError

    h = _harness(harness)
    h.log = log
    out: dict[InstrCase, InstructionRecord] = {}
    for c in cases:
        why = _skip_reason(h, c)
        if why:
            out[c] = _record(c, "skipped", why)
            continue
        try:
            h.artifact(c.model, c.variant, c.size)
            h.inputs(c.model, c.size)
        except ExportError as exc:
            known = h.spec(c.model).known_failures.get(c.variant)
            status = "skipped" if known else "error"
            note = f"known failure ({known}): " if known else ""
            out[c] = _record(
                c, status, f"{note}{c.variant} export of {c.model} failed, nothing to count: {exc}"
            )
    return out


def count_instructions(
    cases: Sequence[InstrCase | tuple[str, str, int]],
    harness: HarnessSettings | None = None,
    settings: CountSettings | None = None,
    *,
    workdir: Path | str | None = None,
    prepare_first: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> list[InstructionRecord]:
    """Count the instructions per call of every case in one valgrind process, and the cases of
    OWN_PROCESS_FORMS in a second one (more only if one dies: the case it died in is reported as an
    error and a new process takes the rest of its group).

    Returns one record per case, in the order given: ``counted`` with ``instructions_per_call``,
    or ``skipped``/``error`` with the reason.  ``workdir`` keeps the plan, the results, the child's
    and valgrind's logs (a temporary folder otherwise, removed afterwards).
    """
    harness = harness or HarnessSettings()
    settings = settings or CountSettings()
    todo = [c if isinstance(c, InstrCase) else InstrCase(*c) for c in cases]
    if len(set(todo)) != len(todo):
        raise InstructionsError("the same case appears twice; give each model-variant-size once")
    version = valgrind_version(settings.valgrind)
    records: dict[InstrCase, InstructionRecord] = prepare(todo, harness, log) if prepare_first else {}
    pending = [c for c in todo if c not in records]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parbench-instr-")))
        else:
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
        numbers = itertools.count()  # process-<n> files stay distinct across the groups
        for group in _process_groups(pending):
            _count_group(group, records, harness, settings, version, work, numbers, log)
    return [records[c] for c in todo]


def _process_groups(cases: Sequence[InstrCase]) -> list[list[InstrCase]]:
    """The cases of each valgrind process: the forms of OWN_PROCESS_FORMS in one of their own."""
    shared = [c for c in cases if c.variant not in OWN_PROCESS_FORMS]
    own = [c for c in cases if c.variant in OWN_PROCESS_FORMS]
    return [g for g in (shared, own) if g]


def _count_group(
    pending: list[InstrCase],
    records: dict[InstrCase, InstructionRecord],
    harness: HarnessSettings,
    settings: CountSettings,
    version: str,
    work: Path,
    numbers: Iterator[int],
    log: Callable[[str], None],
) -> None:
    """Count ``pending`` in one valgrind process (more, up to ``max_restarts``, if one dies)."""
    deaths = 0
    while pending:
        results, died = _run_child(pending, harness, settings, version, work, next(numbers), log)
        for rec in results:
            records[rec.case] = rec
        pending = [c for c in pending if c not in records]
        if not died or not pending:
            break
        crashed = died[0]
        if crashed is not None and crashed in pending:
            records[crashed] = _record(crashed, "error", died[1], valgrind=version)
            pending.remove(crashed)
        deaths += 1
        if deaths > settings.max_restarts:
            for c in pending:
                records[c] = _record(
                    c,
                    "error",
                    f"not counted: the valgrind process died {deaths} times; last: {died[1][:500]}",
                    valgrind=version,
                )
            pending = []
        elif pending:
            log(
                f"valgrind process died ({died[1].splitlines()[0][:200]}); a new one counts the "
                f"{len(pending)} case(s) left"
            )


def _run_child(
    cases: Sequence[InstrCase],
    harness: HarnessSettings,
    settings: CountSettings,
    version: str,
    work: Path,
    attempt: int,
    log: Callable[[str], None],
) -> tuple[list[InstructionRecord], tuple[InstrCase | None, str] | None]:
    """One valgrind process over ``cases``: its records, and (case it died in, why) if it died."""
    stem = work / f"process-{attempt}"
    plan, results = stem.with_suffix(".plan.json"), stem.with_suffix(".results.jsonl")
    child_log, vg_log = stem.with_suffix(".child.log"), stem.with_suffix(".valgrind.log")
    dumps = work / f"dumps-{attempt}"
    dumps.mkdir(exist_ok=True)
    callgrind_out = dumps / "callgrind.out"
    process_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    plan.write_text(
        json.dumps(
            {
                "cases": [dataclasses.asdict(c) for c in cases],
                "harness": dataclasses.asdict(harness),
                "calls": settings.calls,
                "warmup": settings.warmup,
                "valgrind": version,
                "process": process_id,
                "callgrind_out": str(callgrind_out),
                "keep_dumps": settings.keep_dumps,
                "onednn": settings.onednn,
            },
            indent=1,
        )
    )
    results.unlink(missing_ok=True)
    cmd = valgrind_command(settings.valgrind, callgrind_out, vg_log, sys.executable, plan, results)
    log(f"counting {len(cases)} case(s) in one valgrind process (logs: {child_log}, {vg_log})")
    t0 = time.monotonic()
    with open(child_log, "w") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                timeout=settings.timeout_s,
                check=False,
            )
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {settings.timeout_s} s"
    log(f"valgrind process finished in {time.monotonic() - t0:.0f} s (exit {code})")
    recs, started = [], None
    if results.exists():
        for line in results.read_text().splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line of a process that died mid-write
            if event.get("event") == "start":
                started = InstrCase(event["model"], event["variant"], int(event["size"]))
            elif event.get("event") == "result":
                recs.append(InstructionRecord.from_json(event["record"]))
                started = None
            elif event.get("event") == "fatal":
                return recs, (None, f"the counting process stopped: {event['message']}")
    if code == 0 and started is None:
        return recs, None
    tail = _tail(vg_log, 15) + "\n" + _tail(child_log, 25)
    where = f"while counting {started.id}" if started else "outside any case"
    return recs, (
        started,
        f"valgrind process exited with {code} {where}; valgrind log {vg_log}, "
        f"child log {child_log}; last lines:\n{tail}",
    )


def _tail(path: Path, n: int) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# pytest-benchmark JSON


def merge_into_benchmark_json(doc: dict[str, Any], records: Iterable[InstructionRecord]) -> int:
    """Write each case's count (``extra_info["instructions"]``, an
    :class:`~parbench.records.instructions.InstructionCount`) into every benchmark entry of that
    model-variant-size (every run of ``--runs K``; its ``process`` tells a reader they are one count).
    Returns the number of entries annotated."""
    by_key = {(r.model, r.variant, str(r.size)): r for r in records}
    n = 0
    for bench in doc.get("benchmarks", []):
        extra = bench.setdefault("extra_info", {})
        key = (str(extra.get("model")), str(extra.get("variant")), str(extra.get("size")))
        rec = by_key.get(key)
        if rec is None:
            continue
        extra["instructions"] = rec.count.model_dump(mode="json")
        n += 1
    return n


def count_for_benchmark_json(
    doc: dict[str, Any],
    harness: HarnessSettings,
    settings: CountSettings,
    sizes: str | tuple[int, ...] = DEFAULT_INSTR_SIZES,
    *,
    workdir: Path | str | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> list[InstructionRecord]:
    """Count the cases of a pytest-benchmark document (host forms, at the sizes ``sizes`` picks)
    in one valgrind process and write the counts into its entries (see
    :func:`merge_into_benchmark_json`).  With ``workdir``, the records are also kept there as
    ``records.jsonl`` beside the logs."""
    keys = dict.fromkeys(
        (str(e["extra_info"]["model"]), str(e["extra_info"]["variant"]), int(e["extra_info"]["size"]))
        for e in doc.get("benchmarks", [])
        if all(k in (e.get("extra_info") or {}) for k in ("model", "variant", "size"))
    )
    cases = select_cases(keys, sizes)
    if not cases:
        log("no case to count: no host form at the chosen sizes among the benchmarks")
        return []
    records = count_instructions(cases, harness, settings, workdir=workdir, log=log)
    merge_into_benchmark_json(doc, records)
    if workdir is not None:
        Path(workdir, "records.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    return records


def records_from_jsonl(path: Path | str) -> list[InstructionRecord]:
    return [
        InstructionRecord.from_json(json.loads(line))
        for line in Path(path).read_text().splitlines()
        if line.strip()
    ]


# ---------------------------------------------------------------------------------------------
# the child, under valgrind


def _harness(settings: HarnessSettings) -> Any:
    from parbench import zoo
    from parbench.run.harness import Harness

    reg = zoo.registry(settings.config_path)
    if settings.sizes:
        reg = {k: dataclasses.replace(v, sizes=tuple(settings.sizes)) for k, v in reg.items()}
    return Harness(None, settings.cache_dir, registry=reg)


def _skip_reason(h: Any, c: InstrCase) -> str | None:
    from parbench.backends import get_backend

    if c.variant not in HOST_FORMS:
        return f"{c.variant} does not run on a runtime of this host: instructions are counted for {', '.join(HOST_FORMS)}"
    if reason := h.skip_reason(c.model, c.variant, c.size):
        return reason
    avail = get_backend(c.variant).available()
    if not avail.can_run:
        return f"{c.variant} cannot run here: {avail.reason}"
    return None


_TOTAL_RE = re.compile(r"^(summary|totals):\s*(.*)$", re.MULTILINE)
_NAME_RE = re.compile(r"\((\d+)\)\s*(.*)$")
_EVENTS_RE = re.compile(r"^events:\s*(.*)$", re.MULTILINE)


def parse_callgrind_total(text: str, event: str = "Ir") -> int:
    """The total of ``event`` in one callgrind dump: its ``summary:`` line (``totals:`` in older
    formats), in the order of its ``events:`` line."""
    ev = _EVENTS_RE.search(text)
    if ev is None:
        raise InstructionsError("not a callgrind dump: no 'events:' line")
    names = ev.group(1).split()
    if event not in names:
        raise InstructionsError(f"the callgrind dump counts {names}, not {event}")
    found = dict((m.group(1), m.group(2).split()) for m in _TOTAL_RE.finditer(text))
    values = found.get("summary") or found.get("totals")
    if not values:
        raise InstructionsError("callgrind dump without a 'summary:' or 'totals:' line")
    index = names.index(event)
    return int(values[index]) if index < len(values) else 0


def parse_callgrind_functions(text: str, prefixes: Sequence[str]) -> int:
    """The inclusive cost (the dump's first event) of the functions whose names start with one of
    ``prefixes``: every cost line in their ``fn=`` blocks, their own and their calls'."""
    names: dict[str, str] = {}  # name compression: "(id) name" defines an id, "(id)" refers to it
    starts = tuple(prefixes)
    inside = False
    total = 0
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):  # the two share one id space
            spec = line.split("=", 1)[1]
            m = _NAME_RE.match(spec)
            if m is None:
                name = spec
            elif m.group(2):
                name = names[m.group(1)] = m.group(2)
            else:
                name = names.get(m.group(1), "")
            if line.startswith("fn="):
                inside = name.startswith(starts)
        elif inside and line[:1] in "0123456789+-*":  # a cost line: position, then the events
            fields = line.split()
            if len(fields) > 1:
                total += int(fields[1])
    return total


def cpu_features() -> dict[str, Any]:
    """What the code sees of the CPU, from inside the process (under valgrind: valgrind's CPUID):
    torch's kernel capability and torch.cpu's feature checks."""
    import torch

    out: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability()}
    for name in sorted(dir(torch.cpu)):
        if name.startswith("_is_") and name.endswith("_supported"):
            with contextlib.suppress(Exception):
                out[name[len("_is_") : -len("_supported")]] = bool(getattr(torch.cpu, name)())
    return out


class _Counter:
    """Collection on around a block; the dump it leaves is read back at once."""

    def __init__(self, callgrind_out: str, keep_dumps: bool):
        import torch

        if not torch._C._valgrind_supported_platform():
            raise InstructionsError(
                "this torch build has no valgrind client requests; counting needs "
                "a Linux x86_64 or aarch64 torch"
            )
        self._torch = torch
        self.out = callgrind_out
        self.keep = keep_dumps
        self.dumps = 0

    def count(self, fn: Callable[[], object], calls: int) -> tuple[int, int]:
        """The instructions of ``calls`` calls, and how many of them SET_ASIDE_FUNCTIONS took."""
        c = self._torch._C
        c._valgrind_toggle()
        for _ in range(calls):
            fn()
        c._valgrind_toggle_and_dump_stats()
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        if not path.exists():
            raise InstructionsError(
                f"no callgrind dump at {path} after the client request: is this process "
                "running under valgrind --tool=callgrind with this --callgrind-out-file?"
            )
        text = path.read_text()
        total = parse_callgrind_total(text)
        set_aside = parse_callgrind_functions(text, SET_ASIDE_FUNCTIONS)
        if not self.keep:
            path.unlink()
        return total, set_aside


def _count_case(
    h: Any, counter: _Counter, c: InstrCase, plan: Mapping[str, Any], features: dict[str, Any]
) -> InstructionRecord:
    from parbench.backends import get_backend
    from parbench.errors import BackendUnavailable
    from parbench.run.timing import torch_threads

    base = dict(
        valgrind=plan["valgrind"],
        cpu_features=features,
        process=plan["process"],
        onednn=bool(plan.get("onednn", True)),
    )
    if why := _skip_reason(h, c):
        return _record(c, "skipped", why, **base)
    known = h.spec(c.model).known_failures.get(c.variant)
    threads = int(plan["harness"]["threads"])
    backend = get_backend(c.variant, threads=threads)  # runtimes with their own pool size it at load
    t0 = time.monotonic()
    try:
        artifact = h.artifact(c.model, c.variant, c.size)
        inputs = h.inputs(c.model, c.size)
        with torch_threads(threads) as in_effect:  # around load too: ONNX Runtime sizes its pool at load
            session = backend.load(artifact)
            executor = str(getattr(session, "executor", ""))
            if "reference" in executor.lower():
                return _record(
                    c,
                    "skipped",
                    f"{c.variant} runs on the {executor!r} executor here, not its deployment runtime",
                    **base,
                )

            def call() -> object:
                return session.run(inputs)

            for _ in range(1 + int(plan["warmup"])):  # first call and warm-up, not counted
                call()
            gc.collect()
            gc.disable()
            try:
                total, set_aside = counter.count(call, int(plan["calls"]))
            finally:
                gc.enable()
    except BackendUnavailable as exc:
        return _record(c, "skipped", f"{c.variant} cannot run here: {exc}", **base)
    except Exception as exc:  # one record per case, whatever failed
        if isinstance(exc, InstructionsError):
            raise
        status = "skipped" if known else "error"
        note = f"known failure ({known}): " if known else ""
        return _record(c, status, f"{note}{type(exc).__name__}: {exc}", **base)
    calls = int(plan["calls"])
    return _record(
        c,
        "counted",
        per_call=(total - set_aside) / calls,
        total=total,
        set_aside=set_aside,
        calls=calls,
        warmup_calls=1 + int(plan["warmup"]),
        threads=in_effect,
        runtime_threads=getattr(session, "threads", None),
        executor=executor,
        wall_s=round(time.monotonic() - t0, 3),
        **base,
    )


def child_main(plan_path: Path, results_path: Path) -> int:
    plan = json.loads(plan_path.read_text())
    with open(results_path, "a") as out:

        def emit(event: dict[str, Any]) -> None:
            out.write(json.dumps(event) + "\n")
            out.flush()

        try:
            harness = HarnessSettings(
                **{k: (tuple(v) if k == "sizes" and v else v) for k, v in plan["harness"].items()}
            )
            h = _harness(harness)
            h.log = lambda msg: print(f"[parbench] {msg}", file=sys.stderr, flush=True)
            counter = _Counter(plan["callgrind_out"], bool(plan.get("keep_dumps")))
            if not plan.get("onednn", True):
                import torch

                torch.backends.mkldnn.enabled = False
            features = cpu_features()
            emit({"event": "env", "cpu_features": features, "valgrind": plan["valgrind"]})
        except Exception as exc:
            emit({"event": "fatal", "message": f"{type(exc).__name__}: {exc}"})
            return 2
        for raw in plan["cases"]:
            c = InstrCase(raw["model"], raw["variant"], int(raw["size"]))
            emit({"event": "start", **dataclasses.asdict(c)})
            try:
                rec = _count_case(h, counter, c, plan, features)
            except InstructionsError as exc:
                emit({"event": "fatal", "message": str(exc)})
                return 2
            except Exception as exc:  # a bug here must not cost the other cases
                rec = _record(
                    c,
                    "error",
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}",
                    valgrind=plan["valgrind"],
                    cpu_features=features,
                    process=plan["process"],
                )
            emit({"event": "result", "record": rec.to_json()})
            print(
                f"[instructions] {c.id}: {rec.status} "
                + (
                    f"{rec.count.per_call:,.0f} per call ({rec.count.wall_s:.0f} s)"
                    if rec.status == "counted"
                    else rec.count.message.splitlines()[0][:200]
                    if rec.count.message
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            gc.collect()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parbench.run.instructions",
        description="The counting child; run by count_instructions under valgrind.",
    )
    parser.add_argument(
        "--child", type=Path, required=True, metavar="PLAN", help="plan JSON written by the parent"
    )
    parser.add_argument(
        "--results", type=Path, required=True, metavar="JSONL", help="where records are appended"
    )
    args = parser.parse_args(argv)
    if os.environ.get("PARBENCH_INSTRUCTIONS_CHILD") != "1":
        parser.error(
            "this is the counting child: it runs under valgrind, started by "
            "parbench.run.instructions.count_instructions"
        )
    return child_main(args.child, args.results)


if __name__ == "__main__":
    raise SystemExit(main())
