"""Request limits, access and binding: the flags shared by ``radpipe serve`` and ``python -m radpipe.serving``.

Every flag has radpipe's dashed spelling (``--max-request-bytes``, as in the other commands) and KServe's
underscored one (``--max_request_bytes``, as ``--http_port`` and ``--model_name`` in KServe's own parser,
which the predictor container's command line follows). Kept free of heavy imports: ``radpipe``'s CLI
builds its parser from here."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from radpipe.errors import RadpipeError

DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DECODE_WORKERS = 1
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (flags of ``radpipe serve`` and ``python -m radpipe.serving``)."""

    max_request_bytes: int = 20 * 1024 * 1024
    """Largest request body; a base64 image is 4/3 of its file size."""
    max_image_pixels: int = 25_000_000
    """Largest decoded image (width x height); checked from the header, before decoding (decompression bombs)."""
    max_images: int = 64
    """Most images in one request."""
    max_request_pixels: int = 100_000_000
    """Most decoded pixels in one request, summed over its images and read from their headers before any is
    decoded. Decoding time grows with pixels, not files: 64 images at the per-image limit would be 1.6
    gigapixels (tens of seconds of CPU); this budget keeps the worst request to four such images."""


def flag(name: str) -> tuple[str, str]:
    """Both spellings of a flag, dashed first (what help shows): ``flag("max_images")``."""
    return f"--{name.replace('_', '-')}", f"--{name}"


def _strtobool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument(
        *flag("max_request_bytes"), type=int, default=defaults.max_request_bytes, help="largest request body in bytes"
    )
    parser.add_argument(
        *flag("max_image_pixels"),
        type=int,
        default=defaults.max_image_pixels,
        help="largest image (width x height), checked before decoding",
    )
    parser.add_argument(
        *flag("max_request_pixels"),
        type=int,
        default=defaults.max_request_pixels,
        help="most decoded pixels per request, summed over its images, checked before decoding any",
    )
    parser.add_argument(*flag("max_images"), type=int, default=defaults.max_images, help="most images per request")
    parser.add_argument(
        *flag("max_batch_size"),
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="most images the micro-batcher puts into one model call",
    )
    parser.add_argument(
        *flag("decode_workers"),
        type=int,
        default=DEFAULT_DECODE_WORKERS,
        help="images decoded at once, over all requests (peak memory grows with it)",
    )


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """Binding, access control and the served version (see docs/serving.md, "Security")."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (HTTP and gRPC); 0.0.0.0 for every interface, as in a pod",
    )
    parser.add_argument(
        *flag("auth_token_file"),
        default=None,
        help="file holding a bearer token that every request but the health probes must send",
    )
    parser.add_argument(
        *flag("enable_repository_api"),
        type=_strtobool,
        nargs="?",
        const=True,
        default=False,
        help="turn on the model repository API (POST /v2/repository/models/NAME/load|unload); needs "
        "--repository-token-file",
    )
    parser.add_argument(
        *flag("repository_token_file"),
        default=None,
        help="file holding the bearer token the repository API needs",
    )
    parser.add_argument(
        *flag("model_version"),
        default=None,
        help="the registered version being served, when the model URI does not say it (a folder such as "
        "/mnt/models); models:/NAME@ALIAS and models:/NAME/N are resolved from the registry",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    keys = ("max_request_bytes", "max_image_pixels", "max_request_pixels", "max_images", "max_batch_size")
    for key in (*keys, "decode_workers"):
        if getattr(args, key) < 1:
            raise RadpipeError(f"--{key} must be a positive integer, got {getattr(args, key)}")
    return Limits(args.max_request_bytes, args.max_image_pixels, args.max_images, args.max_request_pixels)


def model_version_from(args: argparse.Namespace) -> str | None:
    version = args.model_version
    if version is not None and not _VERSION.match(version):
        raise RadpipeError(
            f"--model_version {version!r} is not a version: use the registry's version number (e.g. 3), "
            "up to 64 letters, digits, '.', '_' or '-'"
        )
    return version
