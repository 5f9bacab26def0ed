"""Request limits and the flags shared by ``radpipe serve`` and ``python -m radpipe.serving`` (KServe-style names).

Kept free of heavy imports: ``radpipe``'s CLI builds its parser from here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from radpipe.errors import RadpipeError

DEFAULT_MAX_BATCH_SIZE = 16


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (flags of ``radpipe serve`` and ``python -m radpipe.serving``)."""

    max_request_bytes: int = 20 * 1024 * 1024
    """Largest request body; a base64 image is 4/3 of its file size."""
    max_image_pixels: int = 25_000_000
    """Largest decoded image (width x height); checked from the header, before decoding (decompression bombs)."""
    max_images: int = 64
    """Most images in one request."""


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument(
        "--max_request_bytes", type=int, default=defaults.max_request_bytes, help="largest request body in bytes"
    )
    parser.add_argument(
        "--max_image_pixels",
        type=int,
        default=defaults.max_image_pixels,
        help="largest image (width x height), checked before decoding",
    )
    parser.add_argument("--max_images", type=int, default=defaults.max_images, help="most images per request")
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="most images the micro-batcher puts into one model call",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    for key in ("max_request_bytes", "max_image_pixels", "max_images", "max_batch_size"):
        if getattr(args, key) < 1:
            raise RadpipeError(f"--{key} must be a positive integer, got {getattr(args, key)}")
    return Limits(args.max_request_bytes, args.max_image_pixels, args.max_images)
