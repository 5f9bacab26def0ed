"""Where each scale's pixels come from (issue 17): resized inside the model from the 448 px input (what the
pipeline does) or resized from the source image at each scale (what the earlier probes did).

    .venv/bin/python bench/scale_preprocessing.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5

Both arms: MobileNetV2 ImageNet features at 224, 336 and 448 px, each averaged over the image and its
mirror, concatenated; the pipeline's logistic head (standardised features, balanced class weights, ``C``
chosen by validation log loss over the default grid). The split is ingest's (near-duplicates of training
images removed from validation and test). Prints validation and test scores per arm and the correlation
of the two arms' features at each scale. Results: docs/benchmarks.md, "Resolution and scales".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--scales", default="224,336,448")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, log_loss
    from sklearn.preprocessing import StandardScaler

    from radpipe.batches import predict_in_batches
    from radpipe.components.ingest.ingest import ingest
    from radpipe.components.prepare_base.prepare_base import build_classifier
    from radpipe.config import DataConfig, ModelConfig, TrainConfig
    from radpipe.dataset import load_split, read_manifest
    from radpipe.preprocessing import Preprocessing

    sizes = [int(s) for s in args.scales.split(",")]
    largest = max(sizes)
    weights = Path(args.weights).resolve()
    with tempfile.TemporaryDirectory(prefix="radpipe-bench-") as tmp:
        root = Path(tmp)
        ingest(DataConfig(uri=str(Path(args.data).resolve())), root / "dataset", root / "work")
        classes = read_manifest(root / "dataset")["classes"]

        def features(image_size: int, scales: list[float], split: str) -> tuple[np.ndarray, np.ndarray]:
            config = ModelConfig(weights=str(weights), image_size=image_size, scales=scales, mirror=True)
            model = build_classifier(config, len(classes), weights)
            import keras

            extractor = keras.Model(model.inputs, model.get_layer("features").output)
            data = load_split(root / "dataset", split, Preprocessing(image_size=image_size), classes)
            return predict_in_batches(extractor, data.images.astype(np.float32), 16), data.labels

        arms: dict[str, dict[str, np.ndarray]] = {"in the model, from 448 px": {}, "from the source image": {}}
        labels: dict[str, np.ndarray] = {}
        started = time.monotonic()
        for split in ("train", "val", "test"):
            arms["in the model, from 448 px"][split], labels[split] = features(
                largest, [s / largest for s in sizes], split
            )
            per_scale = [features(size, [1.0], split)[0] for size in sizes]
            arms["from the source image"][split] = np.concatenate(per_scale, axis=1)
        print(f"features: {time.monotonic() - started:.0f} s")

        width = arms["from the source image"]["train"].shape[1] // len(sizes)
        for i, size in enumerate(sizes):
            a = arms["in the model, from 448 px"]["test"][:, i * width : (i + 1) * width].ravel()
            b = arms["from the source image"]["test"][:, i * width : (i + 1) * width].ravel()
            print(f"feature correlation at {size} px (test): {np.corrcoef(a, b)[0, 1]:.3f}")

        grid = TrainConfig().head_c
        print(f"{'arm':28} {'C':>6} {'val loss':>9} {'val acc':>8} {'test acc':>9} {'test F1':>8}")
        for name, x in arms.items():
            scaler = StandardScaler().fit(x["train"])
            best = None
            for c in grid:
                fitted = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(
                    scaler.transform(x["train"]), labels["train"]
                )
                val = fitted.predict_proba(scaler.transform(x["val"]))
                loss = log_loss(labels["val"], val, labels=fitted.classes_)
                if best is None or loss < best[0]:
                    best = (loss, c, fitted, val)
            loss, c, fitted, val = best
            test = fitted.predict(scaler.transform(x["test"]))
            print(
                f"{name:28} {c:6g} {loss:9.3f} {accuracy_score(labels['val'], val.argmax(1)):8.3f} "
                f"{accuracy_score(labels['test'], test):9.3f} {f1_score(labels['test'], test, average='macro'):8.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
