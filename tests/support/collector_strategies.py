"""Hypothesis strategies for what a hostile or broken client may put in the collector's free-form
fields: lone UTF-16 surrogates, odd date forms, huge and tiny numbers, NaN, deep nesting."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from parbench.records.device import MAX_JSON_DEPTH

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udbffb", "\udc00\ud800"])
TEXT = st.one_of(
    st.text(max_size=12), SURROGATES, st.builds(lambda a, b: a + b, st.text(max_size=4), SURROGATES)
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 5e-324, -0.0, 10**4000, 2**63, -(2**63) - 1]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
FREE_JSON = st.dictionaries(
    TEXT,
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
        max_leaves=8,
    ),
    max_size=4,
)


def _nest(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return {"deep": value}


DEEP_JSON = st.integers(min_value=12, max_value=24).map(_nest)
ODD_DATES = st.one_of(
    st.sampled_from(
        [
            "2026-11-23T12:00:00Z",
            "2026-11-23T12:00:00.123456789+14:00",
            "2026-11-23T12:00:00",
            "2026-W48-1T12:00:00",
            "2026-11-23x12:00:00",
            "2026-11-23 12:00:00Z",
            "20261123T120000Z",
            "2026-11-23",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T12:00:00+99:00",
            "2026-11-23T24:00:00Z",
            "2026-11-23t12:00:00z",
        ]
    ),
    st.text(min_size=10, max_size=40),
    st.builds(lambda s: "2026-11-23T12:00:00" + s, st.text(max_size=6)),
)


# What a valid client may still send: huge and tiny numbers, any valid Unicode, nesting up to the bound.
FINITE = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, 5e-324, -0.0, 10**4000, 2**63, -(2**63) - 1]),
)
VALID_TEXT = st.text(max_size=12)
VALID_FREE_JSON = st.dictionaries(
    VALID_TEXT,
    st.recursive(
        st.one_of(st.none(), st.booleans(), FINITE, VALID_TEXT),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(VALID_TEXT, inner, max_size=3)),
        max_leaves=8,
    ),
    max_size=4,
)
VALID_DEEP_JSON = st.integers(min_value=MAX_JSON_DEPTH - 4, max_value=MAX_JSON_DEPTH - 1).map(_nest)


# Values that always hold what the collector must refuse (so a refusal that stops working is found
# even by the few examples a short run draws): a lone surrogate, NaN or Infinity, too deep nesting.
WITH_SURROGATE = st.builds(lambda a, b: a + b, VALID_TEXT, SURROGATES)
SURROGATE_JSON = st.one_of(
    st.builds(lambda s, v: {s: v}, WITH_SURROGATE, VALID_TEXT),
    st.builds(lambda k, s: {k: [s]}, VALID_TEXT, WITH_SURROGATE),
)
NONFINITE_JSON = st.builds(
    lambda k, x: {k: {"value": x}}, VALID_TEXT, st.sampled_from([math.nan, math.inf, -math.inf])
)
TOO_DEEP_JSON = st.integers(min_value=MAX_JSON_DEPTH, max_value=MAX_JSON_DEPTH + 8).map(_nest)


def same_json(sent: Any, got: Any) -> bool:
    """`got` is `sent` read back: equal, with NaN equal to NaN and an integral float equal to its int."""
    if isinstance(sent, float) and isinstance(got, int | float):
        return sent == got or (math.isnan(sent) and math.isnan(got))
    if isinstance(sent, dict) and isinstance(got, dict):
        return sent.keys() == got.keys() and all(same_json(sent[k], got[k]) for k in sent)
    if isinstance(sent, list) and isinstance(got, list):
        return len(sent) == len(got) and all(same_json(a, b) for a, b in zip(sent, got, strict=True))
    return sent == got
