"""Localising a parity failure: the first layer or op where a form departs from eager, added to the
failure's record (message and ``first_divergence``).  Bounded: one failing case, a few rows."""

from __future__ import annotations

from parbench.diagnose import bisect
from parbench.run.harness import Harness
from parbench.run.parity import ParityOutcome


def localise_failure(h: Harness, outcome: ParityOutcome) -> None:
    record, art, case = outcome.record, outcome.artifact, outcome.failed_case
    if art is None or case is None:
        return
    if art.format == "mlpackage" and record.variant in bisect.BISECT_VARIANTS:
        record.message += "\n" + bisect.note(h.module(record.model), art.path, case.inputs)
    elif art.format == "aimodel":
        from parbench.diagnose.coreai_intermediates import annotate

        annotate(record, h.module(record.model), art, case.inputs)
