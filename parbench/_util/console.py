"""Console helpers for converters: quiet their chatter, and keep the useful part of their errors."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _lines(exc: BaseException) -> list[str]:
    msg = _ANSI.sub("", str(exc)).strip() or repr(exc)
    return [ln.rstrip() for ln in msg.splitlines() if ln.strip()]


def error_text(exc: BaseException, max_lines: int = 6, max_chars: int = 900) -> str:
    """The first lines of an exception's own message, prefixed by its type, plus the first line
    of its root cause when that differs (converters often wrap the useful message)."""
    text = "\n".join(_lines(exc)[:max_lines])
    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is not exc:
        first = (_lines(root) or [""])[0]
        if first and first not in text:
            text += f"\n(root cause: {type(root).__name__}: {first})"
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence converter chatter for a block: Python prints and progress bars, warnings, and
    what native code writes to the stdout/stderr file descriptors (restored after)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (embedded interpreters): nothing to silence
                    pass
            buf = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                warnings.simplefilter("ignore")
                yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
