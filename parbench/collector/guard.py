"""The collector's ASGI guard: bearer-token check and body-size bound for every ``/api/`` request
(health is open), enforced before any body is read, so an unauthenticated or oversized request
never reaches the store.  Also the one shape of every error body (docs/collector-api.md)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("parbench.collector")

API_PREFIX = "/api/v1"
MIN_TOKEN_CHARS = 16
# A wrong token from a client waits FAIL_DELAY_S times its recent failures (at most MAX_FAIL_DELAY_S).
FAIL_DELAY_S = 0.1
MAX_FAIL_DELAY_S = 2.0
FAIL_MEMORY_S = 300.0
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation",
    503: "unavailable",
}


def error_body(status: int, reason: str, code: str | None = None, **more: Any) -> dict[str, Any]:
    return {"error": code or ERROR_CODES.get(status, "error"), "reason": reason, **more}


def error_response(
    status: int, reason: str, code: str | None = None, headers: dict[str, str] | None = None, **more: Any
) -> JSONResponse:
    return JSONResponse(error_body(status, reason, code, **more), status_code=status, headers=headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str, host: str) -> None:
    """ValueError unless `token` may guard a collector listening on `host`."""
    if not token or any(c.isspace() for c in token) or not token.isascii():
        raise ValueError("the collector token must be a non-empty ASCII string without spaces")
    if len(token) < MIN_TOKEN_CHARS and not is_loopback(host):
        raise ValueError(
            f"a collector listening on {host} needs a token of at least {MIN_TOKEN_CHARS} characters "
            f"(this one has {len(token)}): make one with `openssl rand -hex 16` and give it with "
            "--token-file or PARBENCH_COLLECTOR_TOKEN, or leave the token out to have one generated"
        )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class Guard:
    """Bearer-token check and body-size bound (middleware of the collector app)."""

    def __init__(self, app: ASGIApp, token: str, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode()
        self.max_body = max_body_bytes
        self._failures: dict[str, tuple[int, float]] = {}

    async def _slow_down(self, client: str, problem: str) -> None:
        """Guessing tokens gets slower the more a client guesses (the wait does not block others)."""
        now = time.monotonic()
        count, last = self._failures.get(client, (0, now))
        count = 1 if now - last > FAIL_MEMORY_S else count + 1
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures[client] = (count, now)
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("refused request from %s (%s); %d failed attempts", client, problem, count)
        await asyncio.sleep(min(FAIL_DELAY_S * count, MAX_FAIL_DELAY_S))

    async def _refuse(
        self, send: Send, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        await error_response(status, reason, headers=headers)({"type": "http"}, _no_receive, send)

    def _auth_problem(self, headers: dict[bytes, bytes]) -> str:
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if not auth:
            return "missing 'Authorization: Bearer <token>' header (the token is printed by `parbench serve`)"
        if scheme.lower() != b"bearer" or not given.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if not secrets.compare_digest(given.strip(), self.token):
            return "wrong token"
        return ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        path = scope["path"]
        if path.startswith("/api/") and path.rstrip("/") not in OPEN_PATHS:
            problem = self._auth_problem(headers)
            client = (scope.get("client") or ("?", 0))[0]
            if problem and not problem.startswith("missing"):
                await self._slow_down(client, problem)
            elif not problem:
                self._failures.pop(client, None)
            if problem:
                await self._refuse(send, 401, problem, {"WWW-Authenticate": "Bearer"})
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if n > self.max_body:
                await self._refuse(
                    send,
                    413,
                    f"body of {n} bytes is over the collector's limit of "
                    f"{self.max_body} bytes: post results in smaller batches",
                )
                return
        if scope["method"] in ("POST", "PUT", "PATCH") and path.startswith("/api/"):
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media and media != b"application/json":
                await self._refuse(
                    send, 422, "the body must be JSON sent with 'Content-Type: application/json'"
                )
                return
        received = 0
        limit = self.max_body
        first = True

        async def bounded_receive() -> Message:
            nonlocal received, first
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if first and body:
                    first = False
                    if body.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body[:4]:
                        raise HTTPException(
                            422,
                            "body is not valid JSON: it must be UTF-8 encoded JSON without a byte-order mark",
                        )
                received += len(body)
                if received > limit:
                    # FastAPI passes HTTPException raised while reading the body through to its handler.
                    raise HTTPException(
                        413,
                        f"body is over the collector's limit of {limit} bytes: post results in smaller batches",
                    )
            return message

        await self.app(scope, bounded_receive, send)
