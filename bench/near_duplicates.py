"""Near-duplicates across splits, at several Hamming thresholds, and what finding them costs.

    python bench/near_duplicates.py --data ../shared/data/chest-ct [--bits 0 2 3 4 6 8] [--hash phash]
        [--sheet pairs.png --at 4]

Reads the data set as ingest does (discovery, decoding, byte-level de-duplication: ingest's own
functions), hashes every image, and prints per threshold the near-duplicate pairs between each two
splits, how many validation/test images have a training look-alike, and the pairs that join two
*classes*. Those last are the evidence a threshold is too loose: two slices of one scan share a class, so
a pair across classes is two patients that merely look alike. ``--hash dhash`` compares imagehash's
difference hash. ``--sheet`` draws up to 8 cross-split pairs at exactly ``--at`` bits side by side, to
look at before choosing ``data.near_duplicate_bits``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--bits", type=int, nargs="+", default=[0, 2, 3, 4, 6, 8])
    parser.add_argument("--hash", choices=("phash", "dhash"), default="phash")
    parser.add_argument("--sheet", type=Path, help="write a PNG of cross-split pairs at --at bits")
    parser.add_argument("--at", type=int, default=4)
    args = parser.parse_args()

    import imagehash

    from radpipe.components.ingest.ingest import IngestReport, deduplicate, discover, find_root, inspect_images
    from radpipe.components.ingest.near_duplicates import close_pairs
    from radpipe.config import DataConfig
    from radpipe.preprocessing import open_image, to_rgb

    root = find_root(Path(args.data).resolve())
    config = DataConfig(uri=str(root), near_duplicates=False)  # hashed below, timed on its own
    report = IngestReport()
    with tempfile.TemporaryDirectory():
        images = deduplicate(inspect_images(discover(root, {}, "_", report), config, report), report)
    hasher = imagehash.phash if args.hash == "phash" else imagehash.dhash
    decoded = [to_rgb(open_image(image.path)).convert("L") for image in images]
    started = time.perf_counter()
    hashes = [str(hasher(picture)) for picture in decoded]
    hash_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pairs = list(close_pairs(hashes, max(args.bits)))
    search_seconds = time.perf_counter() - started

    def splits_of(p):  # type: ignore[no-untyped-def]
        order = ("train", "val", "test")
        a, b = sorted((images[p.first].split or "train", images[p.second].split or "train"), key=order.index)
        return f"{a}-{b}"

    rows = []
    for bits in args.bits:
        within = [p for p in pairs if p.distance <= bits]
        by_splits = Counter(splits_of(p) for p in within)
        lookalikes = Counter(
            images[i].split
            for i in {
                (p.second if images[p.second].split != "train" else p.first)
                for p in within
                if (images[p.first].split == "train") != (images[p.second].split == "train")
            }
        )
        rows.append(
            {
                "bits": bits,
                "pairs": dict(sorted(by_splits.items())),
                "val/test images with a train look-alike": dict(sorted(lookalikes.items())),
                "pairs across classes": sum(1 for p in within if images[p.first].label != images[p.second].label),
                "all pairs": len(within),
            }
        )
    result = {
        "data": str(root),
        "images": dict(Counter(i.split or "none" for i in images)),
        "hash": args.hash,
        "hash_seconds": round(hash_seconds, 2),
        "ms_per_image": round(1000 * hash_seconds / max(1, len(images)), 2),
        "pair_search_seconds": round(search_seconds, 3),
        "thresholds": rows,
    }
    print(json.dumps(result, indent=2))
    if args.sheet:
        cross = [p for p in pairs if p.distance == args.at and splits_of(p).split("-")[0] != splits_of(p).split("-")[1]]
        write_sheet(args.sheet, [(images[p.first], images[p.second]) for p in cross[:8]])
        print(f"wrote {len(cross[:8])} pairs at {args.at} bits to {args.sheet}", file=sys.stderr)
    return 0


def write_sheet(path: Path, pairs: list) -> None:  # type: ignore[type-arg]
    from PIL import Image, ImageDraw

    tile = 220
    sheet = Image.new("RGB", (2 * tile + 10, max(1, len(pairs)) * (tile + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, pair in enumerate(pairs):
        for col, image in enumerate(pair):
            x, y = col * (tile + 10), row * (tile + 16)
            sheet.paste(Image.open(image.path).convert("RGB").resize((tile, tile)), (x, y + 14))
            draw.text((x, y), image.relpath[-40:], fill="black")
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
