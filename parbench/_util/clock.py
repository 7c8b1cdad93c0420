"""The one UTC time format parbench writes: RFC 3339 with a ``Z`` (``2026-11-30T02:01:18Z``),
with microseconds where order within a second matters (store receipts)."""

from __future__ import annotations

import datetime as dt

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
UTC_FORMAT_US = "%Y-%m-%dT%H:%M:%S.%fZ"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # file names: sortable, no colons


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_now(precise: bool = False) -> str:
    return now().strftime(UTC_FORMAT_US if precise else UTC_FORMAT)


def file_stamp() -> str:
    """A UTC stamp for file names (``20261130T020118Z``)."""
    return now().strftime(STAMP_FORMAT)


def parse_utc(text: str) -> dt.datetime:
    """An aware datetime from a stored time (``Z``, an offset, or none: UTC)."""
    stamp = dt.datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
