"""Does the logistic head learn more from augmented copies of the training images? Judged on grouped CV.

    .venv/bin/python bench/feature_augmentation.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --work /tmp/feature-layers --copies 2

The head's learning curve is still falling at full size (bench/feature_layers.py --learning-curve), so
more training images should help. Augmented copies are the cheap kind: each costs one more backbone pass
over the training split. This script computes ``--copies`` copies of every training image through the train stage's own
augmentation layers (``train.augmentation``: flipped, rotated ±18°, zoomed ±10 %, shifted ±5 %,
contrast ±10 %; ``--augmentation gentle`` rotates ±10° only), through the pipeline's
forward passes (``out_relu`` average-pooled at each scale, averaged with the mirror image), and judges
them as bench/feature_layers.py judges a recipe: grouped 5-fold cross-validation over train, three fold
seeds, out-of-fold log loss on the *original* held-out images; a fold's fit adds the copies of its own
images only (a copy of a held-out scan never trains the fit that scores it).
Results: docs/benchmarks.md, "Honest validation".
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from feature_layers import GRID, fit

from radpipe.components.train.augmentation import augmentation_layers
from radpipe.config import AugmentationConfig

KEY = "out_relu:avg"
BENCH_AUGMENTATION = AugmentationConfig(rotation=10 / 360)
"""The first try's: rotation +-10 degrees, the rest as train.augmentation's defaults."""


def augmented_features(
    dataset: Path, weights: Path, sizes: tuple[int, ...], framing: str, copies: int, config: AugmentationConfig
) -> np.ndarray:
    """(copies, train images, features): each copy a fresh random augmentation of every training image."""
    import keras
    import tensorflow as tf

    from radpipe.backbones import BACKBONES
    from radpipe.components.prepare_base.backbones import normalization_layer
    from radpipe.dataset import load_split, read_manifest
    from radpipe.preprocessing import Preprocessing

    base = keras.applications.MobileNetV2(
        include_top=False, weights=str(weights), input_shape=(None, None, 3), pooling="avg"
    )
    normalize = normalization_layer(BACKBONES["mobilenet_v2"])
    augment = keras.Sequential(augmentation_layers(config, seed=0))
    pooled = tf.function(lambda batch: base(batch, training=False), reduce_retracing=True)
    classes = read_manifest(dataset)["classes"]
    train = load_split(dataset, "train", Preprocessing(image_size=max(sizes), framing=framing), classes)
    keras.utils.set_random_seed(0)
    out = []
    started = time.monotonic()
    for copy in range(copies):
        chunks = []
        for start in range(0, len(train.images), 4):
            raw = augment(train.images[start : start + 4].astype(np.float32), training=True)
            x = normalize(tf.clip_by_value(raw, 0.0, 255.0))
            scales = []
            for size in sizes:
                view = x if size == max(sizes) else tf.image.resize(x, (size, size), antialias=True)
                scales.append((pooled(view).numpy() + pooled(tf.reverse(view, axis=[2])).numpy()) / 2)
            chunks.append(np.concatenate(scales, axis=1))
        out.append(np.concatenate(chunks))
        print(f"copy {copy + 1}: {time.monotonic() - started:.0f} s", flush=True)
    return np.stack(out)


def cv_losses(
    x: np.ndarray, extra: np.ndarray, y: np.ndarray, g: np.ndarray, copies: int, seed: int
) -> dict[float, tuple[float, float]]:
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.unique(y)
    oof = {c: np.zeros((len(y), len(labels))) for c in GRID}
    for fit_idx, held_idx in StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed).split(x, y, g):
        fit_x = np.concatenate([x[fit_idx], *(extra[k][fit_idx] for k in range(copies))])
        fit_y = np.concatenate([y[fit_idx]] * (copies + 1))
        for c in GRID:
            model = fit(fit_x, fit_y, c)
            oof[c][np.ix_(held_idx, model.classes_)] = model.predict_proba(x[held_idx])
    return {c: (log_loss(y, p, labels=labels), accuracy_score(y, p.argmax(1))) for c, p in oof.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--work", required=True, help="bench/feature_layers.py's --work: its data set and features")
    parser.add_argument("--framing", default="trim-pad")
    parser.add_argument("--sizes", default="224,336,448,560")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--augmentation",
        default="default",
        choices=("default", "gentle"),
        help="train.augmentation's defaults (rotation +-18 degrees), or the first try's gentler rotation (+-10)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sklearn.metrics import accuracy_score

    from radpipe.dataset import read_manifest

    work = Path(args.work)
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",")))
    layers = work / f"layers-{args.framing}-{'-'.join(map(str, sizes))}.npz"
    if not layers.is_file():
        raise SystemExit(f"{layers} missing: run bench/feature_layers.py with the same --work first")
    data = dict(np.load(layers))
    augmentation = AugmentationConfig() if args.augmentation == "default" else BENCH_AUGMENTATION
    cached = work / f"augmented-{args.augmentation}-{args.framing}-{'-'.join(map(str, sizes))}-{args.copies}.npy"
    if not cached.is_file():
        found = augmented_features(
            work / "dataset", Path(args.weights).resolve(), sizes, args.framing, args.copies, augmentation
        )
        np.save(cached, found)
    extra = np.load(cached)
    group_of = {f["path"]: f["group"] for f in read_manifest(work / "dataset")["files"]}
    groups = np.asarray([group_of[str(p)] for p in data["train|paths"]])
    x, y = data[f"train|{KEY}"], data["train|y"]
    seeds = [int(s) for s in args.seeds.split(",")]
    for copies in range(args.copies + 1):
        runs = [cv_losses(x, extra, y, groups, copies, seed) for seed in seeds]
        c = min(GRID, key=lambda c: np.mean([r[c][0] for r in runs]))
        model = fit(np.concatenate([x, *extra[:copies]]), np.concatenate([y] * (copies + 1)), c)
        test = accuracy_score(data["test|y"], model.predict(data[f"test|{KEY}"]))
        val = accuracy_score(data["val|y"], model.predict(data[f"val|{KEY}"]))
        print(
            f"{copies} augmented copies: C={c:g} cv loss {np.mean([r[c][0] for r in runs]):.3f} "
            f"cv acc {np.mean([r[c][1] for r in runs]):.3f} (by fold seed "
            f"{', '.join(f'{r[c][0]:.3f}' for r in runs)}) | val acc {val:.3f} test acc {test:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
