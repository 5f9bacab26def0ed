"""Do an intermediate layer and augmented copies add up, and does per-image contrast matter? Grouped CV judges.

    .venv/bin/python bench/layers_with_copies.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --work /tmp/layers-with-copies [--intensity none,autocontrast,equalize]

bench/feature_layers.py judged intermediate layers without augmented copies, and
bench/feature_augmentation.py copies of the last layer alone. This script computes, in the pipeline's
forward passes (trim-pad, 224-560 px, each scale averaged with its mirror), the pooled ``out_relu``,
``block_13_expand_relu`` and ``block_10_expand_relu`` of every image and of one augmented copy of every
training image (``train.augmentation``'s defaults), for each ``--intensity``: ``none`` (the pipeline),
``autocontrast`` (each trimmed image's grey levels stretched so its brightest 1 % is white) or ``equalize``
(histogram equalisation). Each recipe is judged as the train stage judges ``C``: grouped 5-fold CV over
the training split, three fold seeds, a fold's fit adding its own images' copies and scoring originals.
Validation and test are read after the choice, never used for it; "refit" is the fit on train + copies +
validation, as ``evaluate.refit`` registers. Also printed: test-time averaging over the original and its
copy (out of fold), and how well grey-level statistics alone tell the three carcinomas apart on each split.
Results: docs/benchmarks.md, "What the head learns from".
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from feature_layers import fit
from honest_validation import ingested

LAYERS = ("out_relu", "block_13_expand_relu", "block_10_expand_relu")
RECIPES = {"out_relu": 1, "out_relu + block_13": 2, "out_relu + block_13 + block_10": 3}
"""Recipe -> how many of LAYERS (in order) the head sees."""
GRID = (0.01, 0.03, 0.1, 0.3)
SPLITS = ("train", "val", "test")


def intensity_transform(mode: str):
    from PIL import ImageOps

    if mode == "autocontrast":
        return lambda image: ImageOps.autocontrast(image, cutoff=(0, 1), preserve_tone=True)
    if mode == "equalize":
        return ImageOps.equalize
    return lambda image: image


def pooler(weights: Path, layers: tuple[str, ...]):
    """``(pooled, normalize)``: a traced function from a normalised batch to each of ``layers`` average-pooled,
    and MobileNetV2's input normalisation, as prepare-base builds them."""
    import keras
    import tensorflow as tf

    from radpipe.backbones import BACKBONES
    from radpipe.components.prepare_base.backbones import normalization_layer

    base = keras.applications.MobileNetV2(include_top=False, weights=str(weights), input_shape=(None, None, 3))
    maps = keras.Model(base.input, [base.get_layer(name).output for name in layers])
    pooled = tf.function(
        lambda b: [tf.reduce_mean(f, axis=(1, 2)) for f in maps(b, training=False)], reduce_retracing=True
    )
    return pooled, normalization_layer(BACKBONES["mobilenet_v2"])


def pooled_features(
    images: np.ndarray, pooled, normalize, layers: tuple[str, ...], sizes: tuple[int, ...], augment=None
) -> dict[str, np.ndarray]:
    """Each layer's pooled features of ``images`` (optionally through ``augment`` first) at every size, each
    averaged with its mirror image, the sizes side by side: the pipeline's forward passes."""
    import tensorflow as tf

    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for start in range(0, len(images), 4):
        raw = images[start : start + 4].astype(np.float32)
        x = normalize(tf.clip_by_value(augment(raw, training=True), 0.0, 255.0) if augment else raw)
        per: dict[str, list[np.ndarray]] = {name: [] for name in layers}
        for size in sizes:
            view = x if size == max(sizes) else tf.image.resize(x, (size, size), antialias=True)
            for name, a, b in zip(layers, pooled(view), pooled(tf.reverse(view, axis=[2])), strict=True):
                per[name].append((a.numpy() + b.numpy()) / 2)
        for name in layers:
            chunks[name].append(np.concatenate(per[name], axis=1))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def compute(dataset: Path, weights: Path, mode: str, sizes: tuple[int, ...], out: Path) -> None:
    """``<split>|<layer>`` (images, scales * channels) and ``copy|<layer>`` for one copy of train."""
    import keras

    import radpipe.preprocessing as preprocessing
    from radpipe.components.train.augmentation import augmentation_layers
    from radpipe.config import AugmentationConfig
    from radpipe.dataset import load_split, read_manifest

    trim, adjust = preprocessing.trim_dark_border, intensity_transform(mode)
    preprocessing.trim_dark_border = lambda image: adjust(trim(image))  # trim-pad's crop, then the grey levels
    pooled, normalize = pooler(weights, LAYERS)
    augment = keras.Sequential(augmentation_layers(AugmentationConfig(), seed=0))
    keras.utils.set_random_seed(0)

    classes = read_manifest(dataset)["classes"]
    arrays: dict[str, np.ndarray] = {}
    started = time.monotonic()
    for split in SPLITS:
        data = load_split(
            dataset, split, preprocessing.Preprocessing(image_size=max(sizes), framing="trim-pad"), classes
        )
        features = pooled_features(data.images, pooled, normalize, LAYERS, sizes)
        arrays.update({f"{split}|{k}": v for k, v in features.items()})
        if split == "train":
            copies = pooled_features(data.images, pooled, normalize, LAYERS, sizes, augment)
            arrays.update({f"copy|{k}": v for k, v in copies.items()})
        arrays[f"{split}|y"], arrays[f"{split}|paths"] = data.labels, np.asarray(data.paths)
        print(f"{mode}: {split} {time.monotonic() - started:.0f} s", flush=True)
    np.savez(out, **arrays)


def judge(data: dict[str, np.ndarray], groups: np.ndarray, layers: int, seeds: list[int]) -> dict[str, object]:
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    def stacked(prefix: str) -> np.ndarray:
        return np.concatenate([data[f"{prefix}|{name}"] for name in LAYERS[:layers]], axis=1)

    x, copy, y = stacked("train"), stacked("copy"), data["train|y"]
    labels = np.unique(y)
    runs, tta = [], []
    for seed in seeds:
        oof = {c: np.zeros((len(y), len(labels))) for c in GRID}
        averaged = {c: np.zeros((len(y), len(labels))) for c in GRID}
        for fit_idx, held in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
            for c in GRID:
                model = fit(np.concatenate([x[fit_idx], copy[fit_idx]]), np.concatenate([y[fit_idx]] * 2), c)
                oof[c][np.ix_(held, model.classes_)] = model.predict_proba(x[held])
                averaged[c][np.ix_(held, model.classes_)] = (oof[c][held] + model.predict_proba(copy[held])) / 2
        runs.append({c: (log_loss(y, p, labels=labels), accuracy_score(y, p.argmax(1))) for c, p in oof.items()})
        tta.append({c: log_loss(y, p, labels=labels) for c, p in averaged.items()})
    c = min(GRID, key=lambda c: np.mean([r[c][0] for r in runs]))
    model = fit(np.concatenate([x, copy]), np.concatenate([y, y]), c)
    refit = fit(np.concatenate([x, copy, stacked("val")]), np.concatenate([y, y, data["val|y"]]), c)
    return {
        "C": c,
        "cv loss": float(np.mean([r[c][0] for r in runs])),
        "by fold seed": [round(r[c][0], 3) for r in runs],
        "cv acc": float(np.mean([r[c][1] for r in runs])),
        "cv loss, original + copy averaged": float(np.mean([t[c] for t in tta])),
        "val loss": log_loss(data["val|y"], model.predict_proba(stacked("val")), labels=labels),
        "val acc": accuracy_score(data["val|y"], model.predict(stacked("val"))),
        "test acc": accuracy_score(data["test|y"], model.predict(stacked("test"))),
        "refit test acc": accuracy_score(data["test|y"], refit.predict(stacked("test"))),
    }


def grey_level_shortcut(dataset: Path) -> None:
    """Grey-level statistics of each framed image (mean, spread, percentiles, dark fraction) -> carcinoma type:
    grouped CV on train, then the fit on train scored on validation and test. A cue that works on train and
    nowhere else is an export's, not the tissue's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from radpipe.dataset import read_manifest
    from radpipe.preprocessing import Preprocessing, to_model_input

    rows: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in SPLITS}
    for f in read_manifest(dataset)["files"]:
        if f["class"] == "normal":
            continue
        grey = to_model_input(dataset / f["path"], Preprocessing(image_size=224, framing="trim-pad")).mean(-1)
        stats = [grey.mean(), grey.std(), (grey < 20).mean(), *np.percentile(grey, [25, 50, 75, 95, 99])]
        for column, value in zip(rows[f["split"]], (stats, f["class"], f["group"]), strict=True):
            column.append(value)
    x, y, g = (np.asarray(v) for v in rows["train"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    cv = cross_val_predict(model, x, y, groups=g, cv=StratifiedGroupKFold(5, shuffle=True, random_state=0))
    model.fit(x, y)
    scores = {s: accuracy_score(rows[s][1], model.predict(np.asarray(rows[s][0]))) for s in ("val", "test")}
    print(
        f"grey levels alone -> carcinoma type: train grouped CV {accuracy_score(y, cv):.3f}, "
        f"val {scores['val']:.3f}, test {scores['test']:.3f} (majority class of train: "
        f"{max(np.unique(y, return_counts=True)[1]) / len(y):.3f})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--work", required=True, help="kept between runs: the ingested data set and its features")
    parser.add_argument("--intensity", default="none,autocontrast")
    parser.add_argument("--seeds", default="0,1,2", help="fold seeds of the cross-validation")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from radpipe.dataset import read_manifest

    work = Path(args.work)
    dataset = ingested(args.data, work)
    group_of = {f["path"]: f["group"] for f in read_manifest(dataset)["files"]}
    grey_level_shortcut(dataset)
    for mode in args.intensity.split(","):
        cached = work / f"layers-with-copies-{mode}.npz"
        if not cached.is_file():
            compute(dataset, Path(args.weights).resolve(), mode, (224, 336, 448, 560), cached)
        data = dict(np.load(cached))
        groups = np.asarray([group_of[str(p)] for p in data["train|paths"]])
        for recipe, layers in RECIPES.items():
            row = judge(data, groups, layers, [int(s) for s in args.seeds.split(",")])
            print(
                f"{mode}, {recipe}, 1 copy: "
                + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
