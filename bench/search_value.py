"""What a two-candidate search is worth over a single config, from models already trained.

    python bench/search_value.py --dataset RUN/.radpipe/pipeline_root/<job>/ingest/dataset \
        --model spine=DIR --model seed7=DIR ... [--reference spine]

Each trained model (a radpipe model folder: a search's `train/trained_model`, or `train_model`'s output)
is one draw of "a single config". Each pair of them is a two-candidate search, decided the way
evaluate-and-register decides (`evaluate.select_by: val_loss`, `evaluate.ensemble: 2`): the better
candidate on validation, replaced by the average of both if that is at least as good there. The script
compares the test results of the single draws with those of the searches over every pair, and with the
searches that include `--reference` (the spine). Test numbers are only read, never used to choose.

The average here is the mean of the members' probabilities, each member on images loaded at its own size;
the registered ensemble resizes one input to each member's size, which moves its log loss by ~0.001.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="an ingested data set (ingest's `dataset` artifact)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a trained model folder")
    parser.add_argument("--reference", help="the NAME of the single config to compare with (the spine)")
    parser.add_argument("--label", default="search_value")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from scipy.stats import spearmanr

    from radpipe.batches import predict_in_batches
    from radpipe.components.evaluate_and_register.ensemble import prefers_average
    from radpipe.components.evaluate_and_register.evaluate import Candidate, ranked
    from radpipe.dataset import load_split
    from radpipe.modelspec import load_model_dir
    from radpipe.validation import log_loss, validation_scores

    if any("=" not in item for item in args.model):
        parser.error("--model takes NAME=DIR (a name for the table, then a trained model folder)")
    models = dict(item.split("=", 1) for item in args.model)
    if len(models) < 2 or (args.reference and args.reference not in models):
        parser.error("give at least two --model NAME=DIR, and --reference one of their names")
    probabilities: dict[tuple[str, str], np.ndarray] = {}
    specs = {}
    splits = {}  # decoded once per split and preprocessing, shared by the models that take it
    class_names: list[str] = []  # the first model's; every other model must have the same
    for name, directory in models.items():
        model, spec = load_model_dir(directory)
        specs[name] = spec
        class_names = class_names or spec.class_names
        if spec.class_names != class_names:
            parser.error(f"{name} has classes {spec.class_names}, the others {class_names}: not the same data set")
        for split in ("val", "test"):
            key = (split, json.dumps(spec.preprocessing.to_dict(), sort_keys=True))
            if key not in splits:
                splits[key] = load_split(args.dataset, split, spec.preprocessing, class_names)
            probabilities[name, split] = predict_in_batches(model, splits[key].images, 32, f"{name}: {split}")
    labels = {split: data.labels for (split, _), data in splits.items()}

    def scores(p_val: np.ndarray, p_test: np.ndarray) -> dict[str, float]:
        return {
            **validation_scores(labels["val"], p_val, len(class_names)),
            "test_accuracy": float((p_test.argmax(1) == labels["test"]).mean()),
            "test_loss": log_loss(labels["test"], p_test),
        }

    single = {n: scores(probabilities[n, "val"], probabilities[n, "test"]) for n in models}
    searches = []
    for a, b in itertools.combinations(models, 2):
        best = ranked([Candidate(None, specs[n], n, "", single[n]) for n in (a, b)])[0].name
        average = scores(*((probabilities[a, s] + probabilities[b, s]) / 2 for s in ("val", "test")))
        chosen = "average" if prefers_average(average, single[best]) else best
        result = average if chosen == "average" else single[best]
        searches.append({"pair": [a, b], "chosen": chosen, **result})

    print("| model | val acc | val loss | test acc | test loss |\n|---|---:|---:|---:|---:|")
    for n, s in sorted(single.items(), key=lambda kv: kv[1]["val_loss"]):
        cells = (s["val_accuracy"], s["val_loss"], s["test_accuracy"], s["test_loss"])
        print(f"| {n} | " + " | ".join(f"{v:.4f}" if i % 2 else f"{v:.3f}" for i, v in enumerate(cells)) + " |")
    rho = spearmanr([s["val_loss"] for s in single.values()], [s["test_accuracy"] for s in single.values()])
    summary = {"spearman_val_loss_test_accuracy": float(rho.correlation)}

    def line(label: str, rows: list[dict[str, float]]) -> None:
        acc = [r["test_accuracy"] for r in rows]
        summary[label] = {
            "n": len(rows),
            "mean_test_accuracy": float(np.mean(acc)),
            "worst": float(min(acc)),
            "mean_test_loss": float(np.mean([r["test_loss"] for r in rows])),
        }
        print(
            f"{label}: {len(rows)}, test accuracy mean {np.mean(acc):.3f} (worst {min(acc):.3f}), "
            f"test loss mean {summary[label]['mean_test_loss']:.4f}"
        )

    print(f"\nSpearman correlation of validation loss with test accuracy: {rho.correlation:.2f}")
    line("single draws", list(single.values()))
    line("searches over pairs", searches)
    wins = sum(
        s["test_accuracy"] > (single[s["pair"][0]]["test_accuracy"] + single[s["pair"][1]]["test_accuracy"]) / 2 + 1e-9
        for s in searches
    )
    print(f"searches above the mean of their two single draws: {wins} of {len(searches)}")
    summary["searches_above_their_singles_mean"] = wins
    if args.reference:
        line(f"searches with {args.reference}", [s for s in searches if args.reference in s["pair"]])
        print(f"{args.reference} alone: test accuracy {single[args.reference]['test_accuracy']:.3f}")
    out = REPO / "bench" / "results" / f"{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"models": models, "single": single, "searches": searches, "summary": summary}, indent=1))
    print(f"raw: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
