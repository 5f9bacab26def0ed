"""Who may call what: bearer tokens, the model repository API, and requests from other web sites.

One policy (:class:`AccessPolicy`) decides for REST (in :mod:`radpipe.serving.middleware`, before a body is
read) and for gRPC (:class:`GrpcAccessInterceptor`), so that neither protocol is a way around the other:

- **Probes are open.** Liveness and readiness (``/``, ``/v2/health/*``, ``/v2/models/<name>/ready``, V1's
  ``GET /v1/models/<name>``, gRPC ``ServerLive``/``ServerReady``/``ModelReady``) answer without credentials:
  the kubelet calls them without any. So does the upload page itself (a static file; it asks for the
  token and sends it with its API calls).
- **Everything else needs the inference token when one is set** (``--auth_token_file``): inference,
  metadata, model lists, ``/metrics``. ``Authorization: Bearer <token>``, compared in constant time;
  otherwise 401 with ``WWW-Authenticate: Bearer``.
- **The model repository API** (``/v2/repository/...``: load, unload, index; gRPC ``RepositoryModel*``)
  is off unless ``--enable_repository_api``; then it needs its own token (``--repository_token_file``),
  so that a client allowed to classify images is not allowed to take the model offline.
- **No state-changing request from another web site.** A page on another origin can make a browser POST
  ``text/plain`` to any address it can reach (no CORS preflight for such "simple" requests), and the
  server would act on it even though the page cannot read the answer. Requests other than GET/HEAD/OPTIONS
  are refused (403) when the browser says they come from elsewhere: ``Sec-Fetch-Site: cross-site`` or
  ``same-site``, or, from browsers that do not send ``Sec-Fetch-Site``, an ``Origin`` whose host is not
  the request's ``Host``. Programs (curl, tritonclient, KServe's clients) send neither header and are not
  affected. This is the rule of Go's ``http.CrossOriginProtection`` and of OWASP's "verifying origin
  with standard headers". Bearer tokens add to it: a browser never attaches one by itself, and a page
  cannot add an ``Authorization`` header to a cross-origin request without a CORS preflight, which this
  server does not grant.
"""

from __future__ import annotations

import hmac
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpipe.errors import RadpipeError

MIN_TOKEN_LENGTH = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > token && chmod 600 token"
_OPEN_PATHS = re.compile(
    r"^(/|/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready|/v1/models/[^/:]+|/ui/?)$"
)
_REPOSITORY_PATH = re.compile(r"^/v2/repository(/|$)")
GRPC_SERVICE = "/inference.GRPCInferenceService/"
GRPC_OPEN = frozenset({"ServerLive", "ServerReady", "ModelReady"})
GRPC_REPOSITORY = frozenset({"RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"})


def read_token(path: str | Path, flag: str) -> bytes:
    """The token in ``path`` (surrounding whitespace removed), refusing a missing, empty or short one."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RadpipeError(f"{flag} {path}: cannot read the token file ({exc}); make one with: {MAKE_TOKEN}") from None
    if len(text) < MIN_TOKEN_LENGTH or any(c.isspace() for c in text):
        raise RadpipeError(
            f"{flag} {path}: the token must be one word of at least {MIN_TOKEN_LENGTH} characters "
            f"(found {len(text)} characters); make one with: {MAKE_TOKEN}"
        )
    return text.encode("utf-8")


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: HTTP status, error kind (a metrics label), message, extra headers."""

    status: int
    kind: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def grpc_code(self) -> Any:
        from grpc import StatusCode

        return {401: StatusCode.UNAUTHENTICATED, 403: StatusCode.PERMISSION_DENIED}.get(
            self.status, StatusCode.PERMISSION_DENIED
        )


def _bearer(value: str | None) -> bytes | None:
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("utf-8")


def _matches(given: bytes | None, expected: bytes) -> bool:
    # compare_digest on the full values: no early exit that would time-leak a prefix.
    return given is not None and hmac.compare_digest(given, expected)


def cross_site_refusal(method: str, headers: dict[str, str]) -> Refusal | None:
    """403 for a state-changing request a browser sends on behalf of a page on another origin."""
    if method.upper() in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site", "").lower()
    origin = headers.get("origin")
    if fetch_site:
        if fetch_site in ("same-origin", "none"):
            return None
        source = origin or f"a {fetch_site} page"
    else:
        if origin is None:
            return None  # not a browser, or a same-origin GET-like request: nothing to check
        parsed = urllib.parse.urlsplit(origin)
        host = headers.get("host", "")
        if origin != "null" and parsed.netloc and parsed.netloc.lower() == host.lower():
            return None
        source = origin
    return Refusal(
        403,
        "cross_origin",
        f"refused a {method.upper()} request from another web site ({source}): this server does not act on "
        "requests that pages on other origins make a browser send. Call the API from a program (curl, "
        "tritonclient), or use this server's own page at /ui/",
    )


@dataclass(frozen=True)
class AccessPolicy:
    """The server's access rules; see the module docstring."""

    auth_token: bytes | None = None
    repository_enabled: bool = False
    repository_token: bytes | None = None

    def __post_init__(self) -> None:
        if self.repository_enabled and not self.repository_token:
            raise RadpipeError(
                "--enable_repository_api needs --repository_token_file: the load/unload API takes the model "
                f"offline and must not be open to anyone who can reach the port; make a token with: {MAKE_TOKEN}"
            )

    @classmethod
    def from_files(
        cls, auth_token_file: str | None, repository_enabled: bool, repository_token_file: str | None
    ) -> AccessPolicy:
        auth = read_token(auth_token_file, "--auth_token_file") if auth_token_file else None
        repository = read_token(repository_token_file, "--repository_token_file") if repository_token_file else None
        if repository is not None and not repository_enabled:
            raise RadpipeError(
                "--repository_token_file is given but the repository API is off; add --enable_repository_api "
                "to turn it on, or drop --repository_token_file"
            )
        return cls(auth, repository_enabled, repository)

    def describe(self) -> str:
        """One log line: what is protected and how."""
        inference = "bearer token (--auth_token_file)" if self.auth_token else "open (no --auth_token_file)"
        repository = "on, repository token" if self.repository_enabled else "off"
        return f"inference and metadata: {inference}; model repository API (load/unload): {repository}"

    def _repository(self, authorization: str | None, unload_hint: str) -> Refusal | None:
        if not self.repository_enabled:
            return Refusal(
                403,
                "repository_disabled",
                "the model repository API (load/unload) is off on this server; start it with "
                "--enable_repository_api and --repository_token_file to manage the model over the API"
                f"{unload_hint}",
            )
        assert self.repository_token is not None
        if not _matches(_bearer(authorization), self.repository_token):
            return Refusal(
                401,
                "unauthorized",
                "the model repository API needs the repository token: send 'Authorization: Bearer <token>' "
                "with the token from the server's --repository_token_file",
                ((b"www-authenticate", b'Bearer realm="radpipe-repository"'),),
            )
        return None

    def _inference(self, authorization: str | None) -> Refusal | None:
        if self.auth_token is None or _matches(_bearer(authorization), self.auth_token):
            return None
        return Refusal(
            401,
            "unauthorized",
            "this server needs an access token: send 'Authorization: Bearer <token>' with the token from the "
            "server's --auth_token_file (on the upload page, paste it into the token field)",
            ((b"www-authenticate", b'Bearer realm="radpipe"'),),
        )

    def http_refusal(self, method: str, path: str, headers: dict[str, str]) -> Refusal | None:
        """Why this REST request may not go on (``headers``: lower-case names), or None."""
        cross_site = cross_site_refusal(method, headers)
        if cross_site is not None:
            return cross_site
        if _REPOSITORY_PATH.match(path):
            hint = "; to stop serving, stop the server (or scale the InferenceService to zero)"
            return self._repository(headers.get("authorization"), hint)
        if method.upper() in ("GET", "HEAD") and _OPEN_PATHS.match(path):
            return None
        return self._inference(headers.get("authorization"))

    def grpc_refusal(self, method_name: str, metadata: Iterable[tuple[str, Any]]) -> Refusal | None:
        """Why this gRPC call may not go on (``method_name``: ``/package.Service/Method``), or None."""
        rpc = method_name.removeprefix(GRPC_SERVICE)
        authorization = next((str(v) for k, v in metadata if k.lower() == "authorization"), None)
        if rpc in GRPC_REPOSITORY:
            return self._repository(authorization, "")
        if rpc in GRPC_OPEN:
            return None
        return self._inference(authorization)


def http_headers(scope: dict[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as a dict of lower-case names (the last value wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def grpc_interceptor(policy: AccessPolicy) -> Any:
    """A gRPC server interceptor that applies ``policy`` to every call before its handler runs."""
    from grpc_interceptor.server import AsyncServerInterceptor

    class GrpcAccessInterceptor(AsyncServerInterceptor):
        async def intercept(self, method: Any, request_or_iterator: Any, context: Any, method_name: str) -> Any:
            refusal = policy.grpc_refusal(method_name, context.invocation_metadata() or ())
            if refusal is not None:
                await context.abort(refusal.grpc_code, refusal.message)
            response = method(request_or_iterator, context)
            return response if hasattr(response, "__aiter__") else await response

    return GrpcAccessInterceptor()
