"""Give memory back to the system after large requests (glibc's allocator; a no-op elsewhere, said once).

Decoding a 25-megapixel image allocates ~100 MB in Pillow's 16 MiB blocks, and frees it a moment later.
glibc serves such blocks from ``mmap`` at first, but raises its mmap threshold to the size of the first
one freed, so that later ones come from its heaps (one arena per decoder thread), where freed memory
stays mapped: after a burst of large requests the server kept hundreds of MiB it no longer used
(docs/benchmarks.md, "The largest requests"). :func:`release` calls ``malloc_trim(0)``, which returns the
free pages of every arena to the system: after each image of at least :data:`TRIM_AFTER_PIXELS`, and
after the model calls of each request whose images hold that many pixels together; small requests never
pay for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

logger = logging.getLogger(__name__)


TRIM_AFTER_PIXELS = 4_000_000
"""An image, or a request's images together, of at least this many pixels (2000 x 2000) trims the heap."""


@functools.cache
def _malloc_trim() -> object | None:
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        logger.info("serving: this C library has no malloc_trim (not glibc); memory after large requests is left to it")
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim(0)``; ~1 ms)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # type: ignore[operator]
