"""Speed-up of training the head on cached backbone features vs. the frozen model end to end, same run.

    python bench/feature_cache.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        [--epochs 10] [--image-size N]

Both arms start from the same base model and train the frozen-backbone phase for the same number of
epochs (no early stopping, no fine-tuning); the features arm is timed twice, with a cold cache (compute
the features once, then train) and a warm one (what every further candidate with the same backbone,
weights and image size pays).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, help="default: the config's model.image_size")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from radpipe.components.ingest.ingest import ingest
    from radpipe.components.prepare_base.prepare_base import prepare_base
    from radpipe.components.train.train import train_model
    from radpipe.config import DataConfig, ModelConfig, TrainConfig
    from radpipe.dataset import read_manifest

    results = {}
    with tempfile.TemporaryDirectory(prefix="radpipe-bench-") as tmp:
        root = Path(tmp)
        ingest(DataConfig(uri=str(Path(args.data).resolve())), root / "dataset", root / "work")
        classes = read_manifest(root / "dataset")["classes"]
        args.image_size = args.image_size or ModelConfig().image_size
        model_config = ModelConfig(weights=str(Path(args.weights).resolve()), image_size=args.image_size)
        prepare_base(model_config, classes, root / "base", root / "work")
        common = {
            "epochs": args.epochs,
            "early_stopping_patience": 0,
            "lr_schedule": "constant",
            "fine_tune_layers": 0,
            "fine_tune_epochs": 0,
        }
        arms = [
            ("end-to-end (frozen backbone, augmentation)", TrainConfig(head_on_features=False, **common)),
            ("features, cold cache", TrainConfig(feature_cache=str(root / "cache"), **common)),
            ("features, warm cache", TrainConfig(feature_cache=str(root / "cache"), **common)),
        ]
        for label, config in arms:
            started = time.monotonic()
            result = train_model(root / "base", root / "dataset", config, root / label.replace(" ", "_"))
            results[label] = {"seconds": time.monotonic() - started, **result.val_metrics}
    base = results[arms[0][0]]["seconds"]
    print(f"\n### Frozen-phase training, {args.epochs} epochs at {args.image_size}px\n")
    print("| arm | wall s | speed-up | val acc | val macro-F1 | val loss |")
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['seconds']:.1f} | {base / r['seconds']:.1f}x | {r['val_accuracy']:.4f} "
            f"| {r['val_macro_f1']:.4f} | {r['val_loss']:.4f} |"
        )
    out = REPO / "bench" / "results" / "feature_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "epochs": args.epochs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
