"""The collector's ASGI guard: bearer-token check and body-size bound for every ``/api/`` request
(health is open), enforced before any body is read, so an unauthenticated or oversized request
never reaches the store.  Also the one shape of every error body (docs/collector-api.md)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/v1"
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


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class Guard:
    """Bearer-token check and body-size bound (middleware of the collector app)."""

    def __init__(self, app: ASGIApp, token: str, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode()
        self.max_body = max_body_bytes

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
        received = 0
        limit = self.max_body

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes HTTPException raised while reading the body through to its handler.
                    raise HTTPException(
                        413,
                        f"body is over the collector's limit of {limit} bytes: post results in smaller batches",
                    )
            return message

        await self.app(scope, bounded_receive, send)
