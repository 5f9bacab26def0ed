"""Calibration, bootstrap intervals, plots, the model card and the HTML report, without MLflow."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radpipe.components.evaluate_and_register.calibration import reliability
from radpipe.components.evaluate_and_register.champion import ChampionScore
from radpipe.components.evaluate_and_register.evaluate import compute_metrics
from radpipe.components.evaluate_and_register.explain import GradcamSample, pick
from radpipe.components.evaluate_and_register.gate import decide
from radpipe.components.evaluate_and_register.intervals import bootstrap
from radpipe.config import GateConfig
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import Preprocessing
from radpipe.reporting import plots
from radpipe.reporting.findings import CandidateSummary, DataSummary, Findings, safe_source, seed_spreads
from radpipe.reporting.model_card import build_model_card
from radpipe.reporting.report import build_report

CLASSES = ["adenocarcinoma", "normal", "squamous.cell.carcinoma"]


@pytest.fixture(scope="module")
def scored():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 40)
    logits = rng.normal(0, 1, (120, 3))
    logits[np.arange(120), labels] += 1.8
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ev = compute_metrics(labels, probabilities, CLASSES)
    ev.intervals = bootstrap(labels, ev.predictions, CLASSES, samples=500)
    return ev


def test_ece_is_zero_when_confidence_matches_accuracy_and_grows_with_overconfidence() -> None:
    labels = np.array([0] * 8 + [1] * 2)  # 80 % right at 0.8 confidence
    calibrated = np.array([[0.8, 0.2]] * 10)
    assert reliability(labels, calibrated).ece == pytest.approx(0.0, abs=1e-9)
    overconfident = np.array([[0.99, 0.01]] * 10)
    rel = reliability(labels, overconfident, bins=10)
    assert rel.ece == pytest.approx(0.19) and rel.counts.sum() == 10 and rel.counts[-1] == 10
    assert rel.to_dict()["accuracy"][0] is None  # empty bins are JSON null, not NaN


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_data() -> None:
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        labels = rng.integers(0, 2, n)
        predicted = np.where(rng.random(n) < 0.8, labels, 1 - labels)
        low, high = bootstrap(labels, predicted, ["a", "b"], samples=400, seed=3).overall["accuracy"]
        assert low <= (labels == predicted).mean() <= high
        return high - low

    assert width(2000) < width(50) / 3
    labels, predicted = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0])
    assert bootstrap(labels, predicted, ["a", "b"], 300, seed=1) == bootstrap(
        labels, predicted, ["a", "b"], 300, seed=1
    )


def test_gradcam_picks_confident_correct_and_wrong_per_class() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([[0.6, 0.4], [0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    assert pick(labels, probabilities, 1) == [1, 2, 3, 4]  # per class: most confident right, then wrong


def sample(true: int, predicted: int) -> GradcamSample:
    image = np.full((32, 32, 3), 100, np.uint8)
    heat = np.zeros((32, 32))
    heat[8:16, 8:16] = 1.0
    return GradcamSample(image, heat, true, predicted, 0.9, f"test/{true}.png")


def test_every_plot_renders_to_a_valid_png(scored, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    history = [
        {"epoch": e, "phase": "frozen" if e < 4 else "fine-tune", "loss": 1 / e, "accuracy": 0.5 + e / 20}
        | {"val_loss": 1.1 / e, "val_accuracy": 0.45 + e / 20}
        for e in range(1, 6)
    ]
    counts = {"train": dict.fromkeys(CLASSES, 30), "val": dict.fromkeys(CLASSES, 5), "test": dict.fromkeys(CLASSES, 40)}
    written = plots.write_plots(tmp_path, scored, counts, history, 4, [sample(0, 0), sample(1, 2)], 1)
    assert list(written) == list(plots.TITLES)
    for path in written.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(data)) as image:
            assert image.width > 400 and image.height > 300
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # something is drawn


def test_plots_without_data_are_left_out(scored, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = plots.write_plots(tmp_path, scored, {"test": dict.fromkeys(CLASSES, 40)}, [], None, [], 0)
    assert "training_curves.png" not in written and "gradcam.png" not in written and len(written) == 5


def findings(ev, champion: ChampionScore | None = None) -> Findings:  # type: ignore[no-untyped-def]
    spec = ModelSpec(
        CLASSES,
        Preprocessing(160),
        "mobilenet_v2",
        "imagenet",
        extra={"train_config": {"epochs": 6, "learning_rate": 0.001}, "best_epoch": 5, "history": [{}] * 6},
    )
    champion = champion or ChampionScore("champion")
    counts = {
        "train": {"adenocarcinoma": 90, "normal": 30, "squamous.cell.carcinoma": 60},
        "test": {c: 40 for c in CLASSES},
    }
    return Findings(
        model_name="chest-ct",
        version="7",
        candidate="default",
        run_id="abc123",
        parent_run_id="p1",
        spec=spec,
        evaluation=ev,
        data=DataSummary("f" * 64, safe_source("https://user:pw@host/data.zip?X-Amz-Signature=secret"), counts),
        decision=decide(ev, champion, GateConfig()),
        gate=GateConfig(),
        champion=champion,
        challenger_alias="challenger",
    )


def test_model_card_states_data_config_metrics_with_intervals_limits_and_not_for_clinical_use(scored) -> None:  # type: ignore[no-untyped-def]
    card = build_model_card(findings(scored, ChampionScore("champion", "6", scored)))
    assert card.startswith("# Model card: chest-ct, version 7")
    assert card.count("Not for clinical use") >= 2
    assert "`" + "f" * 64 + "`" in card and "| adenocarcinoma | 90 | 40 |" in card
    assert "| epochs | 6 |" in card and "Kept epoch 5 of 6" in card and "macro-F1 none set" in card
    low, high = scored.intervals.per_class["normal"]["recall"]
    assert f"({low:.3f}–{high:.3f})" in card and "95% CI" in card
    assert "imbalanced" in card and "no external validation" in card
    assert "champion (version 6)" in card  # the comparison on the same split
    assert "secret" not in card and "pw@" not in card and "https://host/data.zip" in card


def test_report_is_one_self_contained_page(scored, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = plots.write_plots(tmp_path, scored, {"test": dict.fromkeys(CLASSES, 40)}, [], None, [], 0)
    f = findings(scored)
    f.model_name = "<script>alert(1)</script>"
    page = build_report(f, build_model_card(f), written)
    assert page.count('src="data:image/png;base64,') == len(written)
    assert "<script>" not in page and "&lt;script&gt;" in page  # names are escaped
    assert re.search(r"<table>.*Macro-F1", page, re.S) and "Gate passed" in page
    assert "<h1>Model card:" in page  # the Markdown card, rendered


def candidate(name: str, seed: int, val_accuracy: float, val_loss: float, size: int = 448) -> CandidateSummary:
    spec = ModelSpec(
        CLASSES,
        Preprocessing(size),
        "mobilenet_v2",
        "imagenet",
        extra={
            "model_config": {"image_size": size},
            "train_config": {"seed": seed, "head": "logistic"},
            "val_metrics": {"val_accuracy": val_accuracy, "val_macro_f1": val_accuracy - 0.05, "val_loss": val_loss},
        },
    )
    return CandidateSummary.of(name, spec)


def test_seed_spread_groups_candidates_that_differ_by_the_seed_alone() -> None:
    candidates = [
        candidate("s42", 42, 0.90, 0.40),
        candidate("s1", 1, 0.85, 0.45),
        candidate("s7", 7, 0.87, 0.42),
        candidate("small", 42, 0.80, 0.50, size=224),  # another recipe, one seed: no spread of its own
    ]
    (spread,) = seed_spreads(candidates)
    assert spread.names == ["s42", "s1", "s7"] and spread.seeds == [42, 1, 7]
    assert spread.ranges["val_accuracy"] == (0.85, 0.90) and spread.ranges["val_loss"] == (0.40, 0.45)
    assert seed_spreads(candidates[:1] + candidates[3:]) == []


def test_report_lists_the_candidates_and_the_spread_over_seeds(scored, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = findings(scored)
    f.candidate = "s42"
    f.candidates = [candidate("s42", 42, 0.90, 0.40), candidate("s1", 1, 0.85, 0.45), candidate("s7", 7, 0.87, 0.42)]
    card = build_model_card(f)
    assert "## Candidates" in card and "| **s42** | 42 | 0.900 | 0.850 | 0.4000 |" in card
    assert "Spread over seeds 42, 1, 7" in card and "accuracy 0.850–0.900 (5.0 points)" in card
    page = build_report(f, card, {})
    assert "Spread over seeds 42, 1, 7" in page
    f.candidates = f.candidates[:1]  # no search: no candidate table
    assert "## Candidates" not in build_model_card(f)


def test_model_card_states_grouping_and_near_duplicates(scored) -> None:  # type: ignore[no-untyped-def]
    manifest = {
        "fingerprint": "f" * 64,
        "counts": {"train": {c: 40 for c in CLASSES}, "test": {c: 40 for c in CLASSES}},
        "report": {
            "created_splits": ["val"],
            "removed_near_duplicates": [{"removed": "valid/a/1.png"}] * 3,
            "near_duplicates": {
                "hash": "pHash (64 bits)",
                "max_bits": 4,
                "found": {"train-val": 4, "train-test": 0, "val-test": 0},
                "left": {"train-val": 0, "train-test": 0, "val-test": 0},
            },
            "grouping": {
                "by": ["file-name pattern", "near-duplicates"],
                "groups": 295,
                "largest": 34,
                "across_splits": 14,
            },
        },
    }
    f = findings(scored)
    f.data = DataSummary.from_manifest(manifest, "")
    card = build_model_card(f)
    assert "Splits made by radpipe (seeded, stratified, group-disjoint): val" in card
    assert "grouped by file-name pattern and near-duplicates; 295 groups, the largest of 34 images" in card
    assert "14 groups have images in more than one of them" in card
    assert "pHash (64 bits) within 4 bits; pairs across the given splits before removal: train-val 4" in card
    assert "3 near-duplicates of training images from validation/test" in card
    # A data set ingested before grouping existed says so instead of staying silent.
    f.data = DataSummary.from_manifest({"counts": manifest["counts"], "report": {}}, "")
    assert "Grouping: not recorded" in build_model_card(f)


def test_model_card_of_a_logistic_head_shows_its_framing_settings_and_the_choice_of_c(scored) -> None:  # type: ignore[no-untyped-def]
    f = findings(scored)
    tried = [
        {"c": 0.01, "cv_loss": 0.39, "val_loss": 0.58, "val_accuracy": 0.85},
        {"c": 0.1, "cv_loss": 0.37, "val_loss": 0.67, "val_accuracy": 0.83},
    ]
    f.spec = ModelSpec(
        CLASSES,
        Preprocessing(448, framing="trim-pad"),
        "mobilenet_v2",
        "imagenet",
        extra={
            "train_config": {"head": "logistic", "head_selection": "grouped-cv", "head_cv_folds": 5, "epochs": 100},
            "logistic_head": tried,
            "val_metrics": {"val_accuracy": 0.83},
            "best_epoch": 1,
            "history": [{}],
        },
    )
    card = build_model_card(f)
    assert "RGB 448×448 (dark border trimmed, then fitted inside the square" in card
    assert "| head_selection | grouped-cv |" in card and "| epochs |" not in card  # what does not shape the head
    assert "C = 0.1 kept by the lowest out-of-fold log loss of grouped 5-fold cross-validation" in card
    assert "| **0.1** | 0.3700 | 0.6700 | 0.830 |" in card and "| 0.01 | 0.3900 |" in card
    assert "Kept epoch" not in card and "Validation (the kept head): accuracy 0.830." in card
    # Chosen on validation (train.head_selection 'validation'): the column that chose is the validation loss.
    f.spec = f.spec.with_extra(logistic_head=[{k: v for k, v in r.items() if k != "cv_loss"} for r in tried])
    card = build_model_card(f)
    assert "C = 0.01 kept by the lowest validation log loss" in card and "| **0.01** | – | 0.5800 |" in card
