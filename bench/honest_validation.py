"""Choosing the logistic head's recipe on honest validation (issue 17): group-disjoint cross-validation over
Kaggle's train and valid parts together, against the pipeline's one validation split.

    .venv/bin/python bench/honest_validation.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --work /tmp/honest-validation

Ingest runs once into ``--work`` (its split: near-duplicates of training images removed from validation and
test, every image with a group key); the pipeline's backbone features (MobileNetV2 at each of ``--sizes``, by
default 224, 336 and 448 px resized inside the model, each averaged over the image and its mirror) are
computed once and kept there as ``features.npz`` (``features-<framing>[-<sizes>].npz`` for another
``--framing`` or ``--sizes``), so re-running with other recipes skips the backbone (each recipe's
cross-validation takes a few minutes on 2 cores).

Two ways of choosing ``C`` and judging a recipe, side by side:

- the pipeline's until this change: fit on train, choose ``C`` on Kaggle's valid part (59 images, no scan
  shared with train after ingest, but few);
- grouped cross-validation: train and valid pooled, ``StratifiedGroupKFold`` over ingest's groups (no scan
  on both sides of a fold), out-of-fold log loss and accuracy, repeated over three fold seeds; the model
  is then fitted on the pool with the ``C`` that cross-validation chose.

Each recipe's test accuracy (85 images) is printed too, read after the choice, never used for it.
Results: docs/benchmarks.md, "Honest validation".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radpipe.preprocessing import FRAMINGS

WIDTH = 1280  # MobileNetV2's pooled features per scale
SIZES = (224, 336, 448)  # the pipeline's default: model.image_size 448, model.scales [0.5, 0.75, 1.0]


@dataclass(frozen=True)
class Recipe:
    name: str
    scales: tuple[int, ...] | None = None  # pixel sizes among --sizes; None: all of them
    weighting: str = "class"  # "class": balanced classes; "group": balanced classes, each group counted once
    grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


RECIPES = [
    Recipe("all scales, balanced classes (default)"),
    Recipe("all scales, groups weighted 1/size", weighting="group"),
    Recipe("all scales, groups weighted 1/sqrt(size)", weighting="sqrt-group"),
    Recipe("224 px only", scales=(224,)),
    Recipe("336 px only", scales=(336,)),
    Recipe("448 px only", scales=(448,)),
    Recipe("224 + 336 px", scales=(224, 336)),
    Recipe("336 + 448 px", scales=(336, 448)),
    Recipe("224 + 336 px, groups weighted 1/size", scales=(224, 336), weighting="group"),
]


def compute_features(dataset: Path, weights: Path, out: Path, framing: str, sizes: tuple[int, ...]) -> None:
    import keras

    from radpipe.batches import predict_in_batches
    from radpipe.components.prepare_base.prepare_base import build_classifier
    from radpipe.config import ModelConfig
    from radpipe.dataset import load_split, read_manifest
    from radpipe.preprocessing import Preprocessing

    classes = read_manifest(dataset)["classes"]
    config = ModelConfig(
        weights=str(weights), framing=framing, image_size=max(sizes), scales=[s / max(sizes) for s in sizes]
    )
    model = build_classifier(config, len(classes), weights)
    extractor = keras.Model(model.inputs, model.get_layer("features").output)
    arrays: dict[str, np.ndarray] = {}
    started = time.monotonic()
    for split in ("train", "val", "test"):
        data = load_split(dataset, split, Preprocessing(image_size=config.image_size, framing=framing), classes)
        arrays[f"{split}_x"] = predict_in_batches(extractor, data.images.astype(np.float32), 16)
        arrays[f"{split}_y"] = data.labels
        arrays[f"{split}_paths"] = np.asarray(data.paths)
    print(f"features: {time.monotonic() - started:.0f} s", flush=True)
    np.savez(out, **arrays)


def ingested(data: str, work: Path) -> Path:
    """The pipeline's ingest of ``data`` (its split, groups and near-duplicate removal), run once into ``work``."""
    from radpipe.components.ingest.ingest import ingest
    from radpipe.config import DataConfig

    dataset = work / "dataset"
    if not (dataset / "manifest.json").is_file():
        ingest(DataConfig(uri=str(Path(data).resolve())), dataset, work / "ingest-work")
    return dataset


def sample_weights(labels: np.ndarray, groups: np.ndarray, weighting: str) -> np.ndarray:
    """Balanced classes (as scikit-learn's "balanced"), optionally each group's images sharing one vote."""
    weights = np.ones(len(labels))
    if weighting in ("group", "sqrt-group"):
        _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        weights = 1.0 / (sizes[inverse] if weighting == "group" else np.sqrt(sizes[inverse]))
    for label in np.unique(labels):
        mask = labels == label
        weights[mask] *= len(labels) / (len(np.unique(labels)) * weights[mask].sum())
    return weights


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    return model.fit(x, y, logisticregression__sample_weight=w)


def columns(x: np.ndarray, scales: tuple[int, ...] | None, sizes: tuple[int, ...]) -> np.ndarray:
    if scales is None:
        return x
    missing = set(scales) - set(sizes)
    if missing:
        raise SystemExit(f"recipe needs features at {sorted(missing)} px: add them to --sizes")
    return np.concatenate([x[:, sizes.index(s) * WIDTH : (sizes.index(s) + 1) * WIDTH] for s in scales], axis=1)


def cv_scores(
    x: np.ndarray, y: np.ndarray, g: np.ndarray, recipe: Recipe, labels: np.ndarray, folds: int, seed: int
) -> dict[float, tuple[float, float]]:
    """Out-of-fold log loss and accuracy of each ``C``, folds group-disjoint and stratified."""
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    oof = {c: np.zeros((len(y), len(labels))) for c in recipe.grid}
    for fit_idx, held_idx in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, g):
        w = sample_weights(y[fit_idx], g[fit_idx], recipe.weighting)
        for c in recipe.grid:
            model = fit(x[fit_idx], y[fit_idx], w, c)
            oof[c][np.ix_(held_idx, model.classes_)] = model.predict_proba(x[held_idx])
    return {c: (log_loss(y, p, labels=labels), accuracy_score(y, p.argmax(1))) for c, p in oof.items()}


def evaluate(
    recipe: Recipe,
    data: dict[str, np.ndarray],
    groups: dict[str, np.ndarray],
    folds: int,
    seeds: list[int],
    sizes: tuple[int, ...],
):
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    x = {s: columns(data[f"{s}_x"], recipe.scales, sizes) for s in ("train", "val", "test")}
    y = {s: data[f"{s}_y"] for s in ("train", "val", "test")}
    labels = np.unique(np.concatenate(list(y.values())))
    row: dict[str, object] = {"recipe": recipe.name}

    # The pipeline's way: fit on train, choose C on valid.
    w = sample_weights(y["train"], groups["train"], recipe.weighting)
    best = None
    for c in recipe.grid:
        model = fit(x["train"], y["train"], w, c)
        loss = log_loss(y["val"], model.predict_proba(x["val"]), labels=labels)
        if best is None or loss < best[0]:
            best = (loss, c, model)
    loss, c, model = best
    test = model.predict(x["test"])
    row["valid"] = {
        "c": c,
        "val_loss": loss,
        "val_acc": accuracy_score(y["val"], model.predict(x["val"])),
        "test_acc": accuracy_score(y["test"], test),
        "test_f1": f1_score(y["test"], test, average="macro"),
    }

    # Grouped cross-validation over train + valid: how each recipe is judged.
    pool_x = np.concatenate([x["train"], x["val"]])
    pool_y = np.concatenate([y["train"], y["val"]])
    pool_g = np.concatenate([groups["train"], groups["val"]])
    runs = [cv_scores(pool_x, pool_y, pool_g, recipe, labels, folds, seed) for seed in seeds]
    c = min(recipe.grid, key=lambda c: np.mean([r[c][0] for r in runs]))
    losses, accs = [r[c][0] for r in runs], [r[c][1] for r in runs]
    model = fit(pool_x, pool_y, sample_weights(pool_y, pool_g, recipe.weighting), c)
    test = model.predict(x["test"])
    row["cv"] = {
        "c": c,
        "cv_loss": float(np.mean(losses)),
        "cv_acc": float(np.mean(accs)),
        "cv_acc_range": [float(min(accs)), float(max(accs))],
        "test_acc": accuracy_score(y["test"], test),
        "test_f1": f1_score(y["test"], test, average="macro"),
        "by_c": {str(k): np.mean([r[k] for r in runs], axis=0).tolist() for k in recipe.grid},
    }

    # What the train stage would do with grouped CV over train alone (val kept for evaluate), per fold seed.
    row["cv_train"] = []
    for seed in seeds:
        scores = cv_scores(x["train"], y["train"], groups["train"], recipe, labels, folds, seed)
        c = min(recipe.grid, key=lambda c: scores[c][0])
        model = fit(x["train"], y["train"], sample_weights(y["train"], groups["train"], recipe.weighting), c)
        row["cv_train"].append(
            {
                "seed": seed,
                "c": c,
                "cv_loss": scores[c][0],
                "val_loss": log_loss(y["val"], model.predict_proba(x["val"]), labels=labels),
                "val_acc": accuracy_score(y["val"], model.predict(x["val"])),
                "test_acc": accuracy_score(y["test"], model.predict(x["test"])),
            }
        )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--work", required=True, help="kept between runs: the ingested data set and its features")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2", help="fold seeds of the cross-validation")
    parser.add_argument("--framing", default="stretch", choices=FRAMINGS, help="model.framing of the features")
    parser.add_argument(
        "--sizes", default="224,336,448", help="pixel sizes of the scales (model.image_size is the largest)"
    )
    parser.add_argument("--only", default="", help="comma-separated recipe numbers (1-based) to run")
    parser.add_argument("--out", default="bench/results/honest-validation.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from radpipe.dataset import read_manifest

    work = Path(args.work)
    dataset = ingested(args.data, work)
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",")))
    name = "features" if args.framing == "stretch" else f"features-{args.framing}"
    features = work / (f"{name}.npz" if sizes == SIZES else f"{name}-{'-'.join(map(str, sizes))}.npz")
    if not features.is_file():
        compute_features(dataset, Path(args.weights).resolve(), features, args.framing, sizes)
    data = dict(np.load(features))
    group_of = {f["path"]: f["group"] for f in read_manifest(dataset)["files"]}
    groups = {s: np.asarray([group_of[str(p)] for p in data[f"{s}_paths"]]) for s in ("train", "val", "test")}
    chosen = [RECIPES[int(i) - 1] for i in args.only.split(",")] if args.only else RECIPES
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    print(
        f"{'recipe':44} | {'C':>6} {'val loss':>8} {'val acc':>7} {'test':>6} | "
        f"{'C':>6} {'cv loss':>7} {'cv acc':>6} {'range':>11} {'test':>6}"
    )
    for recipe in chosen:
        row = evaluate(recipe, data, groups, args.folds, seeds, sizes)
        v, cv = row["valid"], row["cv"]
        print(
            f"{recipe.name:44} | {v['c']:6g} {v['val_loss']:8.3f} {v['val_acc']:7.3f} {v['test_acc']:6.3f} | "
            f"{cv['c']:6g} {cv['cv_loss']:7.3f} {cv['cv_acc']:6.3f} "
            f"{cv['cv_acc_range'][0]:.3f}-{cv['cv_acc_range'][1]:.3f} {cv['test_acc']:6.3f}",
            flush=True,
        )
        for r in row["cv_train"]:
            print(
                f"    train-only grouped CV, fold seed {r['seed']}: C={r['c']:g} cv loss {r['cv_loss']:.3f} "
                f"val loss {r['val_loss']:.3f} val acc {r['val_acc']:.3f} test {r['test_acc']:.3f}",
                flush=True,
            )
        rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
