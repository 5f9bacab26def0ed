"""Which of the frozen backbone's layers should the logistic head see (issue 17)? Judged on grouped CV only.

    .venv/bin/python bench/feature_layers.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --work /tmp/feature-layers

The pipeline's head sees MobileNetV2's last layer (``out_relu``, 1280 channels at 1/32 of the input),
average-pooled, at each scale and averaged with the mirror image. A CT slice's class is largely texture
(glandular, solid, cavitating tissue), which earlier layers describe at a finer grain. This script computes,
in the same forward passes as the pipeline (``--framing``, ``--sizes``, mirror averaging), the pooled output
of several layers and keeps them in ``--work``; every recipe (a set of layers, a pooling) is then judged as
bench/honest_validation.py judges one: grouped cross-validation over the training split with three fold
seeds (no scan on both sides of a fold), ``C`` chosen by out-of-fold log loss. The validation and test
accuracies of the model fitted on train are printed after the choice, never used for it.
Results: docs/benchmarks.md, "Honest validation".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from honest_validation import ingested

LAYERS = (
    "block_3_expand_relu",  # 144 channels, 1/4
    "block_6_expand_relu",  # 192, 1/8
    "block_10_expand_relu",  # 384, 1/16
    "block_13_expand_relu",  # 576, 1/16
    "block_16_expand_relu",  # 960, 1/32
    "out_relu",  # 1280, 1/32: the pipeline's
)

RECIPES: dict[str, list[str]] = {
    "out_relu (pipeline)": ["out_relu:avg"],
    "out_relu avg+max": ["out_relu:avg", "out_relu:max"],
    "out_relu + block_16": ["out_relu:avg", "block_16_expand_relu:avg"],
    "out_relu + block_13": ["out_relu:avg", "block_13_expand_relu:avg"],
    "out_relu + block_13 + block_10": ["out_relu:avg", "block_13_expand_relu:avg", "block_10_expand_relu:avg"],
    "out_relu + block_13 + block_6": ["out_relu:avg", "block_13_expand_relu:avg", "block_6_expand_relu:avg"],
    "out_relu + 16 + 13 + 10 + 6 + 3": [f"{layer}:avg" for layer in LAYERS],
    "block_13 only": ["block_13_expand_relu:avg"],
    "block_16 only": ["block_16_expand_relu:avg"],
}
GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def compute_features(dataset: Path, weights: Path, out: Path, framing: str, sizes: tuple[int, ...]) -> None:
    """Per split: ``<layer>:<pool>`` -> (images, scales * channels), each scale averaged with its mirror."""
    import keras
    import tensorflow as tf

    from radpipe.backbones import BACKBONES
    from radpipe.components.prepare_base.backbones import normalization_layer
    from radpipe.dataset import load_split, read_manifest
    from radpipe.preprocessing import Preprocessing

    backbone = BACKBONES["mobilenet_v2"]
    base = keras.applications.MobileNetV2(include_top=False, weights=str(weights), input_shape=(None, None, 3))
    normalize = normalization_layer(backbone)
    outputs = [base.get_layer(name).output for name in LAYERS]
    maps = keras.Model(base.input, outputs)

    @tf.function(reduce_retracing=True)
    def pooled(batch: tf.Tensor) -> list[tf.Tensor]:
        result = []
        for fmap in maps(batch, training=False):
            result.append(tf.reduce_mean(fmap, axis=(1, 2)))
            result.append(tf.reduce_max(fmap, axis=(1, 2)))
        return result

    classes = read_manifest(dataset)["classes"]
    arrays: dict[str, np.ndarray] = {}
    started = time.monotonic()
    for split in ("train", "val", "test"):
        data = load_split(dataset, split, Preprocessing(image_size=max(sizes), framing=framing), classes)
        per_key: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(data.images), 4):
            x = normalize(data.images[start : start + 4].astype(np.float32))
            by_scale: list[list[np.ndarray]] = []
            for size in sizes:
                view = x if size == max(sizes) else tf.image.resize(x, (size, size), antialias=True)
                plain, mirrored = pooled(view), pooled(tf.reverse(view, axis=[2]))
                by_scale.append([(a.numpy() + b.numpy()) / 2 for a, b in zip(plain, mirrored, strict=True)])
            for index, layer in enumerate(LAYERS):
                for offset, pool in enumerate(("avg", "max")):
                    key = f"{layer}:{pool}"
                    per_key.setdefault(key, []).append(
                        np.concatenate([scale[2 * index + offset] for scale in by_scale], axis=1)
                    )
        for key, chunks in per_key.items():
            arrays[f"{split}|{key}"] = np.concatenate(chunks)
        arrays[f"{split}|y"] = data.labels
        arrays[f"{split}|paths"] = np.asarray(data.paths)
        print(f"{split}: {len(data.labels)} images, {time.monotonic() - started:.0f} s", flush=True)
    np.savez(out, **arrays)


def fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))
    return model.fit(x, y)


def cv_losses(x: np.ndarray, y: np.ndarray, g: np.ndarray, folds: int, seed: int) -> dict[float, tuple[float, float]]:
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.unique(y)
    oof = {c: np.zeros((len(y), len(labels))) for c in GRID}
    for fit_idx, held_idx in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, g):
        for c in GRID:
            model = fit(x[fit_idx], y[fit_idx], c)
            oof[c][np.ix_(held_idx, model.classes_)] = model.predict_proba(x[held_idx])
    return {c: (log_loss(y, p, labels=labels), accuracy_score(y, p.argmax(1))) for c, p in oof.items()}


def learning_curve(
    x: np.ndarray, y: np.ndarray, g: np.ndarray, c: float, fractions: list[float], folds: int, seeds: list[int]
) -> dict[float, tuple[float, float]]:
    """Out-of-fold log loss and accuracy when each fold's fit sees only ``fraction`` of its groups (drawn at
    random, the same draw for every fraction's nested subset): is the head still learning at full size?"""
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.unique(y)
    result: dict[float, list[tuple[float, float]]] = {f: [] for f in fractions}
    for seed in seeds:
        oof = {f: np.zeros((len(y), len(labels))) for f in fractions}
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fit_idx, held_idx in splitter.split(x, y, g):
            fit_groups = np.unique(g[fit_idx])
            order = np.random.default_rng(seed).permutation(fit_groups)
            for fraction in fractions:
                keep = set(order[: max(2, round(fraction * len(order)))])
                idx = fit_idx[np.isin(g[fit_idx], list(keep))]
                model = fit(x[idx], y[idx], c)
                oof[fraction][np.ix_(held_idx, model.classes_)] = model.predict_proba(x[held_idx])
        for fraction, p in oof.items():
            p = np.clip(p, 1e-15, None)
            p /= p.sum(1, keepdims=True)
            result[fraction].append((log_loss(y, p, labels=labels), accuracy_score(y, p.argmax(1))))
    return {f: tuple(np.mean(r, axis=0)) for f, r in result.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--work", required=True, help="kept between runs: the ingested data set and its features")
    parser.add_argument("--framing", default="trim-pad")
    parser.add_argument("--sizes", default="224,336,448,560")
    parser.add_argument("--seeds", default="0,1,2", help="fold seeds of the cross-validation")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated recipe names")
    parser.add_argument(
        "--learning-curve",
        default="",
        help="comma-separated fractions of each fold's training groups: the first recipe's learning curve at "
        "its chosen C, instead of the recipe table",
    )
    parser.add_argument("--out", default="bench/results/feature-layers.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sklearn.metrics import accuracy_score, log_loss

    from radpipe.dataset import read_manifest

    work = Path(args.work)
    dataset = ingested(args.data, work)
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",")))
    features = work / f"layers-{args.framing}-{'-'.join(map(str, sizes))}.npz"
    if not features.is_file():
        compute_features(dataset, Path(args.weights).resolve(), features, args.framing, sizes)
    data = dict(np.load(features))
    group_of = {f["path"]: f["group"] for f in read_manifest(dataset)["files"]}
    groups = np.asarray([group_of[str(p)] for p in data["train|paths"]])
    y = {s: data[f"{s}|y"] for s in ("train", "val", "test")}
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = {k: v for k, v in RECIPES.items() if not args.only or k in args.only.split(",")}
    if args.learning_curve:
        keys = next(iter(chosen.values()))
        x = np.concatenate([data[f"train|{k}"] for k in keys], axis=1)
        runs = [cv_losses(x, y["train"], groups, args.folds, seed) for seed in seeds]
        c = min(GRID, key=lambda c: np.mean([r[c][0] for r in runs]))
        fractions = [float(f) for f in args.learning_curve.split(",")]
        for fraction, (loss, acc) in learning_curve(x, y["train"], groups, c, fractions, args.folds, seeds).items():
            print(
                f"{next(iter(chosen))}, C={c:g}: {fraction:.0%} of each fold's training groups: "
                f"cv loss {loss:.3f} cv acc {acc:.3f}",
                flush=True,
            )
        return 0
    rows = []
    print(f"{'recipe':34} {'dims':>5} | {'C':>6} {'cv loss':>7} {'cv acc':>6} | {'val loss':>8} {'val':>5} {'test':>5}")
    for name, keys in chosen.items():
        x = {s: np.concatenate([data[f"{s}|{k}"] for k in keys], axis=1) for s in ("train", "val", "test")}
        runs = [cv_losses(x["train"], y["train"], groups, args.folds, seed) for seed in seeds]
        c = min(GRID, key=lambda c: np.mean([r[c][0] for r in runs]))
        model = fit(x["train"], y["train"], c)
        row = {
            "recipe": name,
            "keys": keys,
            "dims": x["train"].shape[1],
            "c": c,
            "cv_loss": float(np.mean([r[c][0] for r in runs])),
            "cv_acc": float(np.mean([r[c][1] for r in runs])),
            "cv_loss_by_seed": [r[c][0] for r in runs],
            "val_loss": log_loss(y["val"], model.predict_proba(x["val"]), labels=model.classes_),
            "val_acc": accuracy_score(y["val"], model.predict(x["val"])),
            "test_acc": accuracy_score(y["test"], model.predict(x["test"])),
        }
        rows.append(row)
        print(
            f"{name:34} {row['dims']:5d} | {c:6g} {row['cv_loss']:7.3f} {row['cv_acc']:6.3f} | "
            f"{row['val_loss']:8.3f} {row['val_acc']:5.3f} {row['test_acc']:5.3f}",
            flush=True,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
