"""The gate: does a newly registered version deserve the challenger alias?

It passes when every check passes: the configured absolute thresholds (macro-F1, every class's recall)
and "not worse than the champion by more than the margin" on the same test split. Every check's outcome
is kept, in words, for the version's tags, the report and the model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from radpipe.components.evaluate_and_register.champion import ChampionScore
from radpipe.components.evaluate_and_register.evaluate import Evaluation
from radpipe.config import GateConfig
from radpipe.registry import GATE_REASONS_TAG, GATE_TAG, PASSED


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[Check]
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return PASSED if self.passed else "failed"

    @property
    def reasons(self) -> list[str]:
        """Why it failed; when it passed, what it passed."""
        failed = [c.detail for c in self.checks if not c.passed]
        return failed or [c.detail for c in self.checks]

    def tags(self) -> dict[str, str]:
        tags = {
            GATE_TAG: self.verdict,
            GATE_REASONS_TAG: "; ".join(self.reasons),
            "radpipe.gate.checks": json.dumps([c.__dict__ for c in self.checks]),
        }
        if self.champion_version:
            tags["radpipe.gate.champion_version"] = self.champion_version
            for key, value in self.champion_metrics.items():
                tags[f"radpipe.gate.champion_{key}"] = f"{value:.4f}"
        return tags

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "checks": [c.__dict__ for c in self.checks],
            "champion_version": self.champion_version,
            "champion_metrics": self.champion_metrics,
        }


def _thresholds(evaluation: Evaluation, gate: GateConfig) -> list[Check]:
    checks = []
    macro_f1 = evaluation.metrics["macro_f1"]
    if gate.min_macro_f1 > 0:
        sign = ">=" if macro_f1 >= gate.min_macro_f1 else "<"
        checks.append(
            Check("min_macro_f1", macro_f1 >= gate.min_macro_f1, f"macro-F1 {macro_f1:.3f} {sign} {gate.min_macro_f1}")
        )
    if gate.min_class_recall > 0:
        present = {name: m for name, m in evaluation.per_class.items() if m["support"] > 0}
        missing = sorted(set(evaluation.per_class) - set(present))
        low = {name: m["recall"] for name, m in present.items() if m["recall"] < gate.min_class_recall}
        if missing:
            checks.append(
                Check(
                    "min_class_recall",
                    False,
                    f"no test images of {', '.join(missing)}: their recall cannot be checked",
                )
            )
        elif low:
            worst = ", ".join(f"{name} {value:.3f}" for name, value in sorted(low.items(), key=lambda kv: kv[1]))
            checks.append(Check("min_class_recall", False, f"class recall below {gate.min_class_recall}: {worst}"))
        else:
            name, value = min(((n, m["recall"]) for n, m in present.items()), key=lambda kv: kv[1])
            checks.append(
                Check(
                    "min_class_recall",
                    True,
                    f"every class recall >= {gate.min_class_recall} (lowest: {name} {value:.3f})",
                )
            )
    return checks


def _versus_champion(evaluation: Evaluation, champion: ChampionScore, gate: GateConfig) -> Check:
    key, margin = gate.champion_metric, gate.champion_margin
    label = f"{champion.alias} version {champion.version}"
    if champion.version is None:
        return Check("champion", True, f"no {champion.alias} yet: nothing to compare with")
    if champion.evaluation is None:
        blocked = gate.on_champion_error == "block"
        consequence = "gate fails (on_champion_error: block)" if blocked else "compared on thresholds only"
        return Check("champion", not blocked, f"{label} could not be re-scored ({champion.error}); {consequence}")
    ours, theirs = evaluation.metrics.get(key), champion.evaluation.metrics.get(key)
    if ours is None or theirs is None:
        return Check("champion", False, f"{key} is not defined on this test split for both models; cannot compare")
    ok = ours >= theirs - margin
    relation = "not worse than" if ok else "worse than"
    return Check(
        "champion",
        ok,
        f"{key} {ours:.3f} {relation} {label}'s {theirs:.3f} on the same test split (margin {margin})",
    )


def decide(evaluation: Evaluation, champion: ChampionScore, gate: GateConfig) -> Decision:
    checks = [*_thresholds(evaluation, gate), _versus_champion(evaluation, champion, gate)]
    metrics = {}
    if champion.evaluation is not None:
        metrics = {k: v for k, v in champion.evaluation.metrics.items() if k != "images"}
    return Decision(all(c.passed for c in checks), checks, champion.version, metrics)
