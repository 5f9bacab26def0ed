"""Does the model's answer move with an export's brightness? Validation images, darkened and brightened.

    .venv/bin/python bench/brightness_shift.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --work /tmp/layers-with-copies

The Kaggle exports differ in brightness by split and class (adenocarcinoma's mean grey level is 83 in
train, 77 in valid, 56 in test), so a head that learnt brightness from train will answer differently on
another export of the same tissue. This script fits the default head (``out_relu`` + ``block_13``, one
augmented copy, on train) on bench/layers_with_copies.py's cached features for each ``--intensity``, then
scores validation with every trimmed image's grey levels multiplied by each ``--factors`` value (Pillow's
``ImageEnhance.Brightness``, after trim-pad's crop so the framing is the same): accuracy, and the share of
answers that differ from the unshifted image's. Validation only: test is not read.
Results: docs/benchmarks.md, "Grey levels".
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from feature_layers import fit
from honest_validation import ingested
from layers_with_copies import intensity_transform, pooled_features, pooler

LAYERS = ("out_relu", "block_13_expand_relu")
SIZES = (224, 336, 448, 560)


def shifted_features(dataset: Path, weights: Path, mode: str, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Validation's pooled features, as the pipeline computes them, with grey levels times ``factor``, and
    the images' paths."""
    from PIL import ImageEnhance

    import radpipe.preprocessing as preprocessing
    from radpipe.dataset import load_split, read_manifest

    trim, adjust = preprocessing.trim_dark_border, intensity_transform(mode)
    preprocessing.trim_dark_border = lambda image: adjust(ImageEnhance.Brightness(trim(image)).enhance(factor))
    try:
        data = load_split(
            dataset,
            "val",
            preprocessing.Preprocessing(image_size=max(SIZES), framing="trim-pad"),
            read_manifest(dataset)["classes"],
        )
    finally:
        preprocessing.trim_dark_border = trim
    features = pooled_features(data.images, *pooler(weights, LAYERS), LAYERS, SIZES)
    return np.concatenate([features[name] for name in LAYERS], axis=1), np.asarray(data.paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--work", required=True, help="bench/layers_with_copies.py's --work (its cached features)")
    parser.add_argument("--intensity", default="none,autocontrast")
    parser.add_argument("--factors", default="0.6,0.7,0.85,1.0,1.2")
    parser.add_argument("--c", default="0.03,0.3", help="the head's C values to report")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sklearn.metrics import accuracy_score

    work = Path(args.work)
    dataset = ingested(args.data, work)
    factors = [float(f) for f in args.factors.split(",")]
    print("| intensity | C | " + " | ".join(f"x{f:g} acc / changed" for f in factors) + " |")
    print("|---|---:|" + "---:|" * len(factors))
    for mode in args.intensity.split(","):
        cached = dict(np.load(work / f"layers-with-copies-{mode}.npz"))
        x = np.concatenate([np.concatenate([cached[f"{p}|{n}"] for n in LAYERS], axis=1) for p in ("train", "copy")])
        y = np.concatenate([cached["train|y"]] * 2)
        views = {}
        for f in factors:
            views[f], paths = shifted_features(dataset, Path(args.weights).resolve(), mode, f)
            if not np.array_equal(paths.astype(str), cached["val|paths"].astype(str)):
                raise SystemExit("validation's images are not those of the cached features: delete the cache")
        for c in (float(v) for v in args.c.split(",")):
            model = fit(x, y, c)
            answers = {f: model.predict(v) for f, v in views.items()}
            cells = [
                f"{accuracy_score(cached['val|y'], a):.3f} / {np.mean(a != answers[1.0]):.3f}" for a in answers.values()
            ]
            print(f"| {mode} | {c:g} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
