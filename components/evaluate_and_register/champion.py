"""Re-score the current champion on the candidate's test split, so that the gate compares like with like.

The champion's recorded test metrics came from *its* pipeline run, maybe on other data; only a score on
the same test images is a fair comparison. The champion is loaded by version number (not by alias, which
could move meanwhile) and sees the test images through its own recorded preprocessing (it may have been
trained at another image size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from radpipe import registry
from radpipe.components.evaluate_and_register.evaluate import Evaluation, evaluate_split
from radpipe.model_uri import version_uri

logger = logging.getLogger(__name__)


@dataclass
class ChampionScore:
    """``version`` None: the model has no champion yet. ``error``: it has one that could not be scored."""

    alias: str
    version: str | None = None
    evaluation: Evaluation | None = None
    error: str = ""


def rescore_champion(
    name: str,
    alias: str,
    dataset_dir: str,
    class_names: list[str],
    batch_size: int,
    calibration_bins: int = 10,
) -> ChampionScore:
    """The champion's metrics on this data set's test split, or why there are none."""
    from radpipe.classifier import Classifier
    from radpipe.dataset import load_split

    client = registry.client()
    version = registry.aliases(client, name).get(alias)
    if version is None:
        logger.info(f"evaluate: {name} has no {alias} yet: nothing to compare with")
        return ChampionScore(alias)
    uri = version_uri(name, version)
    logger.info(f"evaluate: re-scoring the {alias}, {uri}, on the same test split")
    try:
        champion = Classifier.load(uri)
        if sorted(champion.class_names) != sorted(class_names):
            return ChampionScore(
                alias,
                version,
                error=f"it knows other classes ({', '.join(champion.class_names)}) than this data set "
                f"({', '.join(class_names)})",
            )
        test = load_split(dataset_dir, "test", champion.spec.preprocessing, champion.class_names)
        evaluation = evaluate_split(champion.model, test, batch_size, calibration_bins, label=f"evaluate: {alias}")
    except Exception as exc:  # any failure is recorded as the gate's reason, never swallowed
        logger.warning(f"evaluate: could not re-score {uri}: {exc.__class__.__name__}: {exc}")
        return ChampionScore(alias, version, error=f"{exc.__class__.__name__}: {exc}")
    logger.info(
        f"evaluate: {alias} (version {version}) on this test split: "
        + " ".join(f"{k}={evaluation.metrics[k]:.4f}" for k in ("accuracy", "macro_f1"))
    )
    return ChampionScore(alias, version, evaluation)
