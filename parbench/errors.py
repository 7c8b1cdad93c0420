"""One error root for parbench.  Library code raises these with a message that says what was
wrong and what to do; the CLI and the pytest plugins turn any :class:`ParbenchError` into one
clear message instead of a traceback.

Each class also derives from the builtin it replaces (ValueError, RuntimeError, ...), so callers
that catch the builtin keep working.
"""

from __future__ import annotations


class ParbenchError(Exception):
    """Root of every error parbench raises on purpose."""


class ConfigError(ParbenchError, ValueError):
    """A model entry, an option or a name is wrong; the message names the model and the key."""


class RecordError(ParbenchError, ValueError):
    """A record file (parity JSON lines, benchmark JSON, manifest, run/result) does not follow
    its schema; the message names the file, the line or field, and the expected form."""


class FixtureError(ParbenchError, ValueError):
    """A fixture set is missing, corrupt or of an unknown format; the message names the file."""


class DegenerateOutputError(FixtureError):
    """A model's golden outputs are (nearly) constant, so every comparison would pass trivially."""


class UnknownVariant(ConfigError, KeyError):
    """A variant name that no deployment form answers to."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailable(ParbenchError, RuntimeError):
    """This form cannot export or run on this machine; the message says why."""


class ExportError(ParbenchError, RuntimeError):
    """Converting the model to this form failed; the message carries the converter's own words."""


class NeedsPerSize(ExportError):
    """The form cannot serve several sizes from one artifact for this model; export per size."""


class SessionError(ParbenchError, RuntimeError):
    """An exported artifact could not be loaded or run; the message carries the runtime's words."""


class StoreError(ParbenchError):
    """A results-store operation was refused; the message says why and what to do."""


class StoreVersionError(StoreError):
    """The store file was written by a newer parbench (unknown schema version)."""


class RunConflictError(StoreError):
    """A run id (or a result key) already exists with different content."""


class RunNotFoundError(StoreError):
    """Results were posted to a run id the store does not know."""


class RegressError(ParbenchError, ValueError):
    """Bad input for a regression decision; the message says what was wrong and what to do."""


class ReportError(ParbenchError):
    """The report cannot be built from these inputs; the message says why and what to do."""


class DeviceError(ParbenchError, RuntimeError):
    """A device-runner step (build, replay, import, check) failed; the message says which and why."""


class DeviceBuildError(DeviceError):
    """The C++ device-runner core could not be configured, built or tested."""
