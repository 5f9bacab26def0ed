"""The real pipeline, end to end, through kfp.local.SubprocessRunner with the embedded sqlite MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radpipe.cli import main
from radpipe.config import load_config
from radpipe.errors import RadpipeError
from radpipe.pipelines.local_run import run_local

from conftest import AS_EXPORTED, make_tree

pytestmark = pytest.mark.e2e

FAST = [
    "model.weights=none",
    "model.image_size=64",
    "model.scales=[0.5, 1.0]",  # the default's shape (one backbone at several scales), small
    f"model.intensity={AS_EXPORTED}",
    "register.model_name=tiny",
]
SEARCH = [
    *FAST,
    "train.epochs=7",
    # Two candidates that differ where the logistic head looks: its regularisation.
    "search.candidates=[{name: strong, train: {head_c: [0.001]}}, {name: weak, train: {head_c: [100.0]}}]",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_tree(tmp_path / "data", {"train/cats": 10, "train/dogs": 10, "test/cats": 3, "test/dogs": 3})
    return tmp_path


def client_for(workdir: Path):  # type: ignore[no-untyped-def]
    import mlflow

    uri = f"sqlite:///{workdir / '.radpipe' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def test_pipeline_registers_versions_moves_aliases_and_is_reproducible(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of one config with a search over two candidates: the first becomes champion, the second
    (the same model again: the same candidate and test scores) challenger."""
    assert main(["run", "--data", "data", *[arg for s in SEARCH for arg in ("--set", s)]]) == 0
    out, err = capsys.readouterr()
    # Quiet: a line per stage start and end (a live bar on a terminal), the warnings, the summary; the
    # whole output of every task is in the log file the summary names, and in MLflow.
    assert "Got executor_input" not in out + err and "[KFP Executor" not in out + err
    assert "prepare-base done in" in err and "evaluate-and-register done in" in err
    assert "warning: train: train.epochs=7 has no effect" in err  # a setting without effect says so
    assert len((out + err).splitlines()) < 40, out + err
    (log_line,) = [line for line in out.splitlines() if line.startswith("log ")]
    log_file = Path(log_line.split()[-1])
    assert log_file.parent == workdir / ".radpipe" / "logs"
    log_text = log_file.read_text()
    assert "Got executor_input" in log_text and "progress ingest: reading images: 26/26 files" in log_text
    assert "registered   models:/tiny/1" in out and "aliases      challenger, champion" in out
    assert "gate         passed: no champion yet" in out and "/evaluation/report.html" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir / '.radpipe' / 'mlflow.db'}" in out
    assert "ingest" in out.split("wall time")[1].splitlines()[0]  # per-stage wall times
    client = client_for(workdir)
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "1"

    version = client.get_model_version("tiny", "1")
    assert len(version.tags["radpipe.data_fingerprint"]) == 64
    first_candidate = version.tags["radpipe.candidate"]
    assert first_candidate in ("strong", "weak")
    assert "not for clinical use" in version.description
    candidate_run = client.get_run(version.run_id)
    parent_id = candidate_run.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["radpipe.registered"] == "models:/tiny/1"
    assert [a.path for a in client.list_artifacts(parent_id, "logs")] == [f"logs/{log_file.name}"]
    assert "logistic regression fit to convergence" in candidate_run.data.tags["radpipe.train.ended"]
    assert "train.epochs" in candidate_run.data.params and "test_accuracy" in candidate_run.data.metrics
    # One point per epoch: the logistic head is one (the C it kept).
    assert len(client.get_metric_history(version.run_id, "val_loss")) == 1
    assert candidate_run.data.tags["tensorflow.version"]

    # The registered model loads from the registry and classifies, also through the CLI.
    from radpipe.classifier import Classifier

    classifier = Classifier.load("models:/tiny@champion")
    assert classifier.class_names == ["cats", "dogs"] and classifier.image_size == 64
    image = sorted((workdir / "data" / "test" / "cats").glob("*.png"))[0]
    expected = classifier.predict([image])[0]
    capsys.readouterr()
    assert main(["predict", "models:/tiny@champion", str(image), "--output", "preds.jsonl"]) == 0
    (line,) = (workdir / "preds.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["label"] == expected.label
    assert record["scores"] == pytest.approx(expected.scores, abs=1e-5)

    # What the KFP UI shows for evaluate-and-register: metrics, the confusion matrix and ROC, the HTML report.
    (task_dir,) = (workdir / ".radpipe" / "pipeline_root").glob("radpipe-training-*/evaluate-and-register")
    executor_output = json.loads((task_dir / "executor_output.json").read_text())
    (classification,) = executor_output["artifacts"]["classification"]["artifacts"]
    matrix = classification["metadata"]["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["cats", "dogs"]
    assert sum(sum(r["row"]) for r in matrix["rows"]) == 6 and classification["metadata"]["confidenceMetrics"]
    report = (task_dir / "report").read_text()
    assert report.count("data:image/png;base64,") >= 6 and "Model card: tiny, version 1" in report
    assert "Not for clinical use" in (task_dir / "model_card").read_text()
    assert version.tags["radpipe.gate"] == "passed" and version.tags["radpipe.registration"] == "complete"

    # The same config again, with a gate margin: the same candidate and scores (reproducible), so it passes
    # the gate and becomes the challenger; the champion stays, to be moved by `radpipe promote`.
    second = run_local(load_config(None, [*SEARCH, "data.uri=data", "register.gate.champion_margin=1.0"]))
    assert second.model_uri == "models:/tiny/2" and second.gate == "passed"
    assert second.candidate == first_candidate
    first_metrics = client.get_run(version.run_id).data.metrics
    assert second.test_accuracy == pytest.approx(first_metrics["test_accuracy"], abs=1e-6)
    assert second.test_macro_f1 == pytest.approx(first_metrics["test_macro_f1"], abs=1e-6)
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    assert client.get_model_version("tiny", "2").tags["radpipe.gate.champion_version"] == "1"

    # The search: every candidate a child run of the pipeline's run; the chosen one has the lowest validation
    # loss (evaluate.select_by), and only it was scored on test.
    version = client.get_model_version("tiny", "2")
    parent_id = client.get_run(version.run_id).data.tags["mlflow.parentRunId"]
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(run.data.tags["radpipe.candidate"] for run in children) == ["strong", "weak"]
    losses = [run.data.metrics["best_val_loss"] for run in children]
    assert losses[0] != pytest.approx(losses[1], abs=1e-4)  # the candidates differ, so choosing means something
    assert client.get_run(version.run_id).data.metrics["best_val_loss"] == min(losses)
    scored = [run.info.run_id for run in children if "test_accuracy" in run.data.metrics]
    assert scored == [version.run_id]
    # Candidates share backbone, weights and size: features are computed once and then read from the cache.
    assert sorted(run.data.tags["radpipe.features_cache_hit"] for run in children) == ["true", "true"]
    for run in children:
        assert run.data.params["train.seed"] == "42" and run.data.tags["keras.version"]


def test_a_failed_run_moves_no_alias_and_says_why(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A version that fails the gate is registered without aliases: exit 0, or 3 for scripts that ask.
    # The test labels are swapped: the model scores 0 there, under the gate's macro-F1 of 0.5.
    swapped = make_tree(
        workdir / "swapped",
        {"train/cats": 10, "train/dogs": 10, "test/cats": 3, "test/dogs": 3},
        value_of=lambda folder: 190 if ("cats" in folder) == folder.startswith("test") else 60,
    )
    fast = [arg for s in FAST for arg in ("--set", s)]
    gate = ["--set", "register.gate.min_macro_f1=0.5"]
    assert main(["run", "--data", str(swapped), "--require-challenger", *gate, *fast]) == 3
    out, err = capsys.readouterr()
    assert "gate         failed" in out and "--require-challenger, and version 1 failed the gate" in err
    client = client_for(workdir)
    assert client.get_model_version("tiny", "1").tags["radpipe.gate"] == "failed"
    assert client.get_registered_model("tiny").aliases == {}

    # A run that fails registers nothing and says why, with the log file that has the rest.
    make_tree(workdir / "one-class", {"train/cats": 6})
    with pytest.raises(RadpipeError, match=r"ingest failed: only one class \('cats'\)") as failed:
        run_local(load_config(None, [*FAST, "data.uri=one-class"]))
    assert "full log: " in str(failed.value)
    assert [str(v.version) for v in client.search_model_versions("name='tiny'")] == ["1"]
    assert client.get_registered_model("tiny").aliases == {}
