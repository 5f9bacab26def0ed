"""The gate's decision: thresholds, the champion comparison, and what it records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radpipe.components.evaluate_and_register.champion import ChampionScore
from radpipe.components.evaluate_and_register.evaluate import compute_metrics
from radpipe.components.evaluate_and_register.gate import decide
from radpipe.config import GateConfig, RegisterConfig
from radpipe.errors import ConfigError

CLASSES = ["a", "b"]


def evaluation(correct_b: int):  # type: ignore[no-untyped-def]
    """4 images of each class; every 'a' right, ``correct_b`` of the 'b' right."""
    labels = np.array([0] * 4 + [1] * 4)
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]] * correct_b + [[0.7, 0.3]] * (4 - correct_b))
    return compute_metrics(labels, probabilities, CLASSES)


def test_no_champion_and_no_thresholds_passes_and_says_why() -> None:
    decision = decide(evaluation(2), ChampionScore("champion"), GateConfig())
    assert decision.passed and decision.reasons == ["no champion yet: nothing to compare with"]
    assert decision.tags()["radpipe.gate"] == "passed" and "radpipe.gate.champion_version" not in decision.tags()


def test_thresholds_on_macro_f1_and_every_class_recall() -> None:
    gate = GateConfig(min_macro_f1=0.7, min_class_recall=0.6)
    decision = decide(evaluation(2), ChampionScore("champion"), gate)
    assert not decision.passed
    assert decision.reasons == ["class recall below 0.6: b 0.500"]  # only what failed
    assert decision.checks[0].detail == "macro-F1 0.733 >= 0.7" and decision.checks[0].passed
    assert [c.name for c in decision.checks if not c.passed] == ["min_class_recall"]
    assert decide(evaluation(3), ChampionScore("champion"), gate).passed


def test_a_class_without_test_images_cannot_pass_a_recall_threshold() -> None:
    labels = np.array([0, 0, 0])
    ev = compute_metrics(labels, np.array([[0.9, 0.1]] * 3), CLASSES)
    decision = decide(ev, ChampionScore("champion"), GateConfig(min_class_recall=0.5))
    assert not decision.passed and "no test images of b" in decision.reasons[0]


def test_champion_comparison_on_the_same_split_with_a_margin() -> None:
    champion = ChampionScore("champion", "3", evaluation(4))
    worse = decide(evaluation(3), champion, GateConfig(champion_margin=0.05))
    assert not worse.passed
    assert worse.reasons == [
        "macro_f1 0.873 worse than champion version 3's 1.000 on the same test split (margin 0.05)"
    ]
    tags = worse.tags()
    assert tags["radpipe.gate.champion_version"] == "3" and tags["radpipe.gate.champion_macro_f1"] == "1.0000"
    assert json.loads(tags["radpipe.gate.checks"])[0]["name"] == "champion"
    assert decide(evaluation(3), champion, GateConfig(champion_margin=0.2)).passed
    by_accuracy = decide(evaluation(3), champion, GateConfig(champion_metric="accuracy", champion_margin=0.125))
    assert by_accuracy.passed  # 0.875 >= 1.0 - 0.125


@pytest.mark.parametrize(("policy", "passes"), [("block", False), ("ignore", True)])
def test_a_champion_that_cannot_be_rescored_is_a_recorded_reason(policy: str, passes: bool) -> None:
    champion = ChampionScore("champion", "2", error="ModelLoadError: no radpipe metadata")
    decision = decide(evaluation(4), champion, GateConfig(on_champion_error=policy))
    assert decision.passed is passes
    assert (
        "champion version 2 could not be re-scored (ModelLoadError: no radpipe metadata)" in decision.checks[0].detail
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"gate": {"min_macro_f1": 1.5}}, "register.gate.min_macro_f1': must be between 0 and 1"),
        ({"gate": {"champion_metric": "auc"}}, "unknown metric 'auc'"),
        ({"gate": {"on_champion_error": "skip"}}, "must be one of block, ignore"),
        ({"gate": {"min_recall": 0.5}}, "did you mean 'min_class_recall'"),
        ({"champion_alias": "latest"}, "'latest' is not a usable alias"),
        ({"challenger_alias": "previous-x"}, "not starting with 'previous-'"),
        ({"challenger_alias": "champion"}, "must differ from register.champion_alias"),
        ({"model_name": "a'b"}, "must not contain"),
    ],
)
def test_gate_config_is_validated(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RegisterConfig.from_dict(raw, "register")


def test_stage_names_are_valid_alias_names() -> None:
    config = RegisterConfig.from_dict({"champion_alias": "production", "challenger_alias": "staging"}, "register")
    assert (config.champion_alias, config.challenger_alias) == ("production", "staging")
