"""Wire the predictor into KServe's server: routes, middleware, error answers, and start.

KServe builds its FastAPI app (``kserve.model_server.app``) when it starts; what is added here before
``ModelServer.start`` comes first in it:

- ``/ui/``: the upload page (a static file, no build step, nothing from the internet);
- ``GET /v2/models/<name>``: KServe's metadata plus the class names and preprocessing;
- :class:`~radpipe.serving.middleware.ServingMiddleware`: access (tokens, the repository API, requests from
  other web sites: :mod:`radpipe.serving.access`), size limit, metrics, unknown model names and versions,
  503 while the model cannot answer;
- answers ``{"error": "..."}`` with a 4xx status for every :class:`~radpipe.serving.protocol.RequestError`
  and every malformed request body.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from typing import Any

from radpipe import tracking
from radpipe.serving import versions
from radpipe.serving.access import AccessPolicy
from radpipe.serving.model import RadpipeModel, default_model_name
from radpipe.serving.options import DEFAULT_DECODE_WORKERS, DEFAULT_HOST, Limits
from radpipe.serving.protocol import RequestError

logger = logging.getLogger(__name__)

UI_PATH = "/ui/"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
)


def load_model(
    model_uri: str,
    model_name: str | None = None,
    limits: Limits | None = None,
    max_batch_size: int = 16,
    allow_embedded_tracking: bool = False,
    model_version: str | None = None,
    decode_workers: int = DEFAULT_DECODE_WORKERS,
) -> RadpipeModel:
    """A loaded, warmed-up predictor for ``model_uri`` (a folder, ``models:/...``, ``runs:/...``, s3/https).

    ``models:/NAME@ALIAS`` is resolved to its version first, and that version is loaded (see
    :mod:`radpipe.serving.versions`); ``model_version`` names the version of a folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if model_uri.startswith(("models:/", "runs:/")):
        import mlflow

        mlflow.set_tracking_uri(tracking.resolve_tracking_uri(allow_embedded=allow_embedded_tracking))
    resolved = versions.resolve(model_uri, model_version)
    model = RadpipeModel(
        model_name or default_model_name(model_uri),
        resolved.load_uri,
        limits,
        max_batch_size,
        version=resolved.version,
        decode_workers=decode_workers,
    )
    model.load()
    return model


def _error_response(request: Any, status: int, kind: str, message: str) -> Any:
    from fastapi.responses import JSONResponse

    from radpipe.serving.middleware import ERROR_KIND_KEY

    request.scope[ERROR_KIND_KEY] = kind
    return JSONResponse(status_code=status, content={"error": message})


def _describe_validation_error(exc: Any) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "not_json", "the request body is not valid JSON; send a JSON inference request"
    parts = []
    for error in errors:
        # The V2 route takes InferenceRequest JSON or binary-extension bytes: report the JSON side only.
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "InferenceRequest"))
        if location == "bytes":
            continue
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid_request", "invalid inference request: " + "; ".join(parts[:5])


def install(fastapi_app: Any, model: RadpipeModel, policy: AccessPolicy | None = None) -> None:
    """Add radpipe's routes, middleware and error handlers to KServe's FastAPI app (before it starts)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, RedirectResponse
    from kserve.errors import ModelNotFound

    from radpipe.serving.middleware import ServingMiddleware

    page = resources.files("radpipe.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    async def ui() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    async def ui_redirect() -> RedirectResponse:
        return RedirectResponse(UI_PATH)

    async def model_metadata(model_name: str) -> dict[str, Any]:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return model.metadata()

    async def request_error(request: Request, exc: RequestError) -> Any:
        return _error_response(request, exc.status, exc.kind, str(exc))

    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        kind, message = _describe_validation_error(exc)
        return _error_response(request, 400, kind, message)

    fastapi_app.add_api_route(UI_PATH, ui, methods=["GET"], include_in_schema=False)
    fastapi_app.add_api_route("/ui", ui_redirect, methods=["GET"], include_in_schema=False)
    fastapi_app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"], tags=["V2"])
    fastapi_app.add_exception_handler(RequestError, request_error)
    fastapi_app.add_exception_handler(RequestValidationError, validation_error)
    fastapi_app.add_middleware(ServingMiddleware, model=model, policy=policy or AccessPolicy())


def run(
    model: RadpipeModel,
    http_port: int = 8080,
    enable_grpc: bool = False,
    host: str = DEFAULT_HOST,
    policy: AccessPolicy | None = None,
    **server_args: Any,
) -> None:
    """Serve ``model`` on ``host`` until SIGTERM/SIGINT (blocks)."""
    from kserve.model_server import app

    from radpipe.serving.server import RadpipeModelServer

    policy = policy or AccessPolicy()
    install(app, model, policy)
    logger.info(f"serving: listening on {host}:{http_port}; {policy.describe()}")
    server = RadpipeModelServer(model, host, policy, http_port=http_port, enable_grpc=enable_grpc, **server_args)
    server.start([model])
