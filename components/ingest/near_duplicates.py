"""Near-duplicates: images that are not byte copies but show the same thing (a neighbouring slice of one
scan, a re-export, a copy with a pen mark on it).

Each image gets a 64-bit perceptual hash, imagehash's pHash: the image in grey, resized to 32x32, its
2D DCT, and one bit per coefficient of the 8x8 lowest frequencies, set when the coefficient is above their
median. Two images are near-duplicates when their hashes differ in at most ``data.near_duplicate_bits``
bits (the Hamming distance). pHash was chosen over the difference hash (dHash) on the chest CT data: for
about as many pairs found, fewer of pHash's pairs join images of different classes, i.e. of different
patients (2 % against 5 %; docs/benchmarks.md, "Near-duplicates"). Half of a pHash's bits are set (the
coefficients above their median), so two differ in an even number of bits: 3 finds what 2 finds.

The search compares every pair, 64-bit XOR and popcount in NumPy in blocks: 0.02 s for 1,000 images,
1.6 s for 10,000 on one CPU core (quadratic: about 3 minutes for 100,000). Hashing costs ~2 ms an image
on top of decoding it, which ingest does anyway.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

HASH_NAME = "pHash"
HASH_BITS = 64
_BLOCK = 512  # rows per block: a block of distances is _BLOCK x n bytes


def perceptual_hash(image: Image.Image) -> str:
    """The image's pHash as 16 hex digits (what the manifest records per file)."""
    import imagehash

    return str(imagehash.phash(image.convert("L")))


def as_array(hashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


@dataclass(frozen=True)
class Pair:
    """Two images (indices into the hashed list) whose hashes are ``distance`` bits apart; ``first < second``."""

    first: int
    second: int
    distance: int


def close_pairs(hashes: Sequence[str], max_bits: int) -> Iterator[Pair]:
    """Every pair of images within ``max_bits`` of each other, in index order."""
    values = as_array(hashes)
    n = len(values)
    for start in range(0, n, _BLOCK):
        block = values[start : start + _BLOCK]
        distances = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(distances <= max_bits)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + row
            if col > i:
                yield Pair(i, col, int(distances[row, col]))
