"""ASGI middleware in front of KServe's app: access, request size limit, empty bodies, and the metrics of
every request.

In order, before any handler sees a request: the access policy (:mod:`radpipe.serving.access`: tokens,
the repository API, requests from other web sites) is applied before a byte of the body is read; a
request for another model, or another version, gets 404; a request for the model while it cannot answer
(unloaded) gets 503. The body is then read and kept only up to the limit: a body over the limit is refused
with 413 without being held in memory (uvicorn itself has no limit), and FastAPI never turns the refusal
into a vague "error parsing the body". Bodies live in memory only.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from radpipe.serving import binary, metrics
from radpipe.serving.access import AccessPolicy, http_headers
from radpipe.serving.model import RadpipeModel
from radpipe.serving.protocol import RequestError

Scope = dict[str, Any]
ERROR_KIND_KEY = "radpipe.error_kind"
"""Exception handlers put the kind of a refused request into the ASGI scope under this key."""

DRAIN_BYTES = 64 * 1024 * 1024
"""A body over the limit by at most this much is read and discarded before the 413, so that a client that
sends its whole body before reading (most HTTP clients) sees the answer instead of a broken pipe."""

MODEL_VERBS = {"infer_v2", "predict_v1", "explain_v1"}
NEEDS_MODEL = MODEL_VERBS | {"metadata_v2"}
"""Endpoints that need the loaded model (V2 and V1 readiness are answered by the data plane: 503 then)."""
_VERSIONED = re.compile(r"^(/v2/models/[^/]+)/versions/([^/]+)(/.*)?$")


def endpoint_of(method: str, path: str) -> str:
    """A fixed, low-cardinality name for the metrics label."""
    if path.startswith("/v2/repository/"):
        return "repository"
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "infer_v2"
        if path.endswith("/ready"):
            return "health"
        return "metadata_v2"
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "predict_v1"
        if path.endswith(":explain"):
            return "explain_v1"
        return "metadata_v1"
    if path.startswith("/v2/health") or path == "/":
        return "health"
    if path.startswith("/ui"):
        return "ui"
    if path == "/metrics":
        return "metrics"
    if path in ("/v2", "/v2/models", "/v1/models"):
        return "metadata"
    return "other"


def model_in_path(path: str) -> str | None:
    """The model name in a model URL (``/v2/models/<name>/...``, ``/v1/models/<name>:predict``,
    ``/v2/repository/models/<name>/load``), else None."""
    for prefix in ("/v2/models/", "/v1/models/", "/v2/repository/models/"):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            return rest.split("/", 1)[0].split(":", 1)[0] if prefix == "/v1/models/" else rest.split("/", 1)[0]
    return None


def kind_of_status(status: int, endpoint: str) -> str:
    if status == 404:
        return "unknown_model" if endpoint in MODEL_VERBS or endpoint.startswith("metadata") else "not_found"
    return {
        401: "unauthorized",
        405: "method_not_allowed",
        413: "request_too_large",
        422: "invalid_request",
        501: "not_implemented",
        503: "not_ready",
    }.get(status, "internal" if status >= 500 else f"http_{status}")


class ServingMiddleware:
    def __init__(self, app: Any, model: RadpipeModel, policy: AccessPolicy) -> None:
        self.app = app
        self.model = model
        self.policy = policy
        self.max_request_bytes = model.limits.max_request_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_of(scope["method"], scope["path"])
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_and_watch(message: dict[str, Any]) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        async def refuse(kind: str, code: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
            scope[ERROR_KIND_KEY] = kind
            await _send_json(send_and_watch, code, {"error": message}, headers)

        try:
            refusal = self.policy.http_refusal(scope["method"], scope["path"], http_headers(scope))
            if refusal is not None:
                await refuse(refusal.kind, refusal.status, refusal.message, refusal.headers)
                return
            name = model_in_path(scope["path"])
            if name is not None and name != self.model.name:
                message = f"no model named '{name}' is served here; this server serves '{self.model.name}'"
                await refuse("unknown_model", 404, message)
                return
            versioned = _VERSIONED.match(scope["path"])
            if versioned is not None:
                if versioned.group(2) != self.model.version:
                    served = f"version {self.model.version}" if self.model.version else "a model of unknown version"
                    message = (
                        f"version {versioned.group(2)} of '{self.model.name}' is not served here; this server serves "
                        f"{served}: use {versioned.group(1)}{versioned.group(3) or ''}"
                    )
                    await refuse("unknown_version", 404, message)
                    return
                path = versioned.group(1) + (versioned.group(3) or "")
                scope = {**scope, "path": path, "raw_path": path.encode()}
            if endpoint in NEEDS_MODEL and not self.model.can_answer():
                message = (
                    f"model '{self.model.name}' is not loaded, so it cannot answer (it was unloaded through the "
                    f"repository API, or is loading); POST /v2/repository/models/{self.model.name}/load brings "
                    "it back where that API is on"
                )
                await refuse("not_ready", 503, message)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body, body_refusal = await self._read_body(scope, receive, endpoint)
                if body_refusal is not None:
                    await refuse(*body_refusal)
                    return
                if endpoint == "infer_v2":
                    try:
                        scope, body = _as_json_request(scope, body)
                    except RequestError as exc:
                        await refuse(exc.kind, exc.status, str(exc))
                        return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_and_watch)
        except Exception:
            scope.setdefault(ERROR_KIND_KEY, "internal")
            if not response_started:
                status = 500
            raise
        finally:
            labels = {"model": self.model.name, "version": self.model.version or "", "endpoint": endpoint}
            metrics.REQUESTS.labels(code=str(status), **labels).inc()
            metrics.LATENCY.labels(**labels).observe(time.perf_counter() - started)
            if status >= 400:
                kind = scope.get(ERROR_KIND_KEY) or kind_of_status(status, endpoint)
                metrics.ERRORS.labels(kind=kind, **labels).inc()

    async def _read_body(self, scope: Scope, receive: Any, endpoint: str) -> tuple[bytes, tuple[str, int, str] | None]:
        limit = self.max_request_bytes
        too_large = (
            "request_too_large",
            413,
            f"the request body is over this server's limit of {limit / 2**20:.1f} MiB (--max_request_bytes); "
            "send fewer or smaller images per request",
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
            return b"", too_large  # not worth reading: the client may see the connection close mid-send
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > limit + DRAIN_BYTES:
                return b"", too_large
            else:
                chunks.clear()  # over the limit: read on and discard, so that the client gets to read the 413
            if not message.get("more_body", False):
                break
        if size > limit:
            return b"", too_large
        body = b"".join(chunks)
        if not body.strip() and endpoint in MODEL_VERBS:
            return b"", (
                "empty_body",
                400,
                "the request body is empty; POST a JSON inference request, e.g. "
                '{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["<base64 PNG>"]}]}',
            )
        return body, None


def _as_json_request(scope: Scope, body: bytes) -> tuple[Scope, bytes]:
    """A V2 inference request as KServe parses it best: JSON, declared as JSON.

    A binary-extension request (``Inference-Header-Content-Length``) becomes the equivalent JSON
    (:mod:`radpipe.serving.binary`); a JSON body sent without ``Content-Type: application/json`` (as
    ``tritonclient`` sends it) is declared as JSON instead of reaching KServe as opaque bytes.
    """
    headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in (b"content-type", b"content-length")]
    length = dict(headers).get(binary.HEADER_LENGTH.encode())
    if length is not None:
        body = binary.to_json_request(body, binary.header_length(length, len(body)))
        headers = [(k, v) for k, v in headers if k.lower() != binary.HEADER_LENGTH.encode()]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {**scope, "headers": headers}, body


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


async def _send_json(
    send: Any, status: int, content: dict[str, Any], extra_headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = orjson.dumps(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
