"""The evaluate-and-register stage against a real MLflow server: plots, report, model card, gate, aliases.

Candidates are real radpipe models: one trained by the train stage (real MLflow child run, real history),
and two with the same backbone whose head is set by hand so that their quality is known in advance: "good"
(a logistic regression fitted on the backbone's features of the training images) and "constant" (always
the first class).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from radpipe import storage
from radpipe.classifier import Classifier
from radpipe.components.evaluate_and_register import stage
from radpipe.components.evaluate_and_register.component import evaluate_and_register
from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.components.train import stage as train_stage
from radpipe.config import ModelConfig
from radpipe.dataset import load_split, read_manifest
from radpipe.modelspec import SPEC_FILE, load_model_dir, read_spec, save_model_dir
from radpipe.reporting import plots as plotting
from radpipe.validation import validation_scores

from conftest import AS_EXPORTED, MlflowServer, make_tree

EXPERIMENT = "radpipe-stage-test"
FAST_EVALUATE = {"bootstrap_samples": 200, "gradcam_per_class": 1}
TINY_MODEL = {"weights": "none", "image_size": 32, "scales": [1.0], "intensity": AS_EXPORTED}
NO_AUGMENTATION = {"flip": False, "rotation": 0, "zoom": 0, "translation": 0, "contrast": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as running:
        yield running.url


def track(url: str) -> dict:
    return {"uri": url, "experiment": EXPERIMENT}


def client_for(url: str):  # type: ignore[no-untyped-def]
    import mlflow

    mlflow.set_tracking_uri(url)
    return mlflow.MlflowClient(url)


def new_run(url: str, name: str) -> str:
    from radpipe import tracking

    experiment_id = tracking.setup_experiment(url, EXPERIMENT)
    return client_for(url).create_run(experiment_id, run_name=name).info.run_id


def with_head(source: Path, dataset: Path, target: Path, kind: str, name: str, run_id: str) -> Path:
    """Copy the model in ``source`` with its classification head replaced (see the module docstring)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    model, spec = load_model_dir(source)
    dense = model.get_layer("probabilities")
    kernel, bias = dense.get_weights()
    k = len(spec.class_names)
    if kind == "constant":
        kernel[:] = 0.0
        bias[:] = [4.0] + [-4.0] * (k - 1)
    else:
        features = keras.Model(model.inputs, model.get_layer("head_dropout").input)
        train = load_split(dataset, "train", spec.preprocessing, spec.class_names)
        x = np.asarray(features.predict_on_batch(train.images.astype(np.float32)), dtype=np.float64)
        mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-30
        fitted = LogisticRegression(C=10.0, max_iter=5000).fit((x - mu) / sd, train.labels)
        coef, intercept = fitted.coef_, fitted.intercept_
        if k == 2:  # a binary fit has one row: softmax([-z/2, z/2]) == sigmoid(z)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        kernel[:] = (coef / sd).T
        bias[:] = intercept - (coef / sd) @ mu
    dense.set_weights([kernel, bias])
    spec = dataclasses.replace(spec, extra={k: v for k, v in spec.extra.items() if k != "refit_head"})  # set by hand
    save_model_dir(model, spec.with_extra(candidate=name, mlflow_run_id=run_id), target)
    return target


@pytest.fixture(scope="module")
def models(server: str, ingested_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("candidates")
    classes = read_manifest(ingested_tiny)["classes"]
    prepare_base(ModelConfig(**TINY_MODEL), classes, root / "base", root)
    train_stage.run(
        dataset_dir=str(ingested_tiny),
        base_dir=str(root / "base"),
        model=dict(TINY_MODEL),
        train={"epochs": 2, "learning_rate": 0.01, "augmentation": NO_AUGMENTATION, "augmented_copies": 0},
        candidate={"name": "trained"},
        track=track(server),
        parent_run_id="",
        output_dir=str(root / "trained"),
    )
    for kind in ("good", "constant"):
        with_head(root / "trained", ingested_tiny, root / kind, kind, kind, "")
    return {kind: root / kind for kind in ("trained", "good", "constant")}


def candidate(models: dict[str, Path], ingested_tiny: Path, server: str, kind: str, tmp_path: Path) -> Path:
    """A fresh copy of a good or constant model with its own MLflow run, as every pipeline candidate has."""
    target = tmp_path / kind
    shutil.copytree(models[kind], target)
    spec = read_spec(target).with_extra(mlflow_run_id=new_run(server, kind))
    storage.atomic_write_json(target / SPEC_FILE, spec.to_dict())
    return target


def parent_run(url: str) -> str:
    run_id = new_run(url, "pipeline")
    client_for(url).update_run(run_id, status="RUNNING")
    return run_id


def run_stage(  # type: ignore[no-untyped-def]
    url: str, dataset: Path, candidate_dir: Path, name: str, out: Path, evaluate: dict | None = None, **register: object
):
    return stage.run(
        dataset_dir=str(dataset),
        candidate_dirs=[str(candidate_dir)],
        evaluate={**FAST_EVALUATE, **(evaluate or {})},
        register={"model_name": name, **register},
        track=track(url),
        parent_run_id=parent_run(url),
        data_fingerprint=read_manifest(dataset)["fingerprint"],
        report_path=str(out / "report.html"),
        model_card_path=str(out / "model_card.md"),
    )


def assert_png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.width >= 300 and image.height >= 200
        return image.size


def test_first_version_is_champion_with_plots_report_card_and_kfp_metrics(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    """Through the KFP component function itself, with real KFP artifact objects."""
    import mlflow
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

    parent = parent_run(server)
    outputs = {
        "test_metrics": Metrics(uri=str(tmp_path / "metrics")),
        "classification": ClassificationMetrics(uri=str(tmp_path / "classification")),
        "report": HTML(uri=str(tmp_path / "report.html")),
        "model_card": Markdown(uri=str(tmp_path / "model_card.md")),
        "serving_manifest": Artifact(uri=str(tmp_path / "serving.yaml")),
    }
    result = evaluate_and_register(
        dataset=Dataset(uri=str(ingested_tiny)),
        candidates=[Model(uri=str(models["trained"]))],
        evaluate=FAST_EVALUATE,
        register={"model_name": "first"},
        tracking=track(server),
        parent_run_id=parent,
        data_fingerprint=read_manifest(ingested_tiny)["fingerprint"],
        **outputs,
    )
    assert result.model_uri == "models:/first/1" and result.gate == "passed"
    assert sorted(result.aliases) == ["challenger", "champion"]
    # The InferenceService of the new version, named by the alias it got; this server proxies artifacts,
    # so storageUri is under the cluster's destination (RADPIPE_MLFLOW_ARTIFACTS_DESTINATION's default).
    service = yaml.safe_load((tmp_path / "serving.yaml").read_text())
    assert service["kind"] == "InferenceService" and service["metadata"]["name"] == "first-champion"
    (container,) = service["spec"]["predictor"]["containers"]
    storage_uri = {e["name"]: e["value"] for e in container["env"]}["STORAGE_URI"]
    assert storage_uri.startswith("s3://mlflow/artifacts/"), storage_uri

    # KFP: the confusion matrix and the ROC curve the UI draws, JSON-safe.
    metadata = outputs["classification"].metadata
    matrix = metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["cats", "dogs"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 4  # every test image
    roc = metadata["confidenceMetrics"]
    assert roc and {"falsePositiveRate", "recall", "confidenceThreshold"} <= set(roc[0])
    json.dumps(metadata, allow_nan=False)
    json.dumps(outputs["test_metrics"].metadata, allow_nan=False)
    assert {"accuracy", "macro_f1", "ece", "macro_f1_ci_low"} <= set(outputs["test_metrics"].metadata)

    # The HTML report: self-contained, every plot embedded, the card inside.
    page = Path(outputs["report"].path).read_text()
    assert page.count('src="data:image/png;base64,') == len(plotting.TITLES)
    assert "Gate passed" in page and "Not for clinical use" in page and "Model card: first, version 1" in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # nothing fetched
    card = Path(outputs["model_card"].path).read_text()
    for needed in ("Not for clinical use", read_manifest(ingested_tiny)["fingerprint"], "95% CI", "Known limits"):
        assert needed in card

    # MLflow: plots as valid PNGs in the candidate's run, the card linked from the version, tags complete.
    client = client_for(server)
    version = client.get_model_version("first", "1")
    tags = version.tags
    assert tags["radpipe.registration"] == "complete" and tags["radpipe.gate"] == "passed"
    assert "no champion yet" in tags["radpipe.gate.reasons"]
    listed = {a.path for a in client.list_artifacts(version.run_id, "evaluation/plots")}
    assert listed == {f"evaluation/plots/{name}" for name in plotting.TITLES}
    for path in listed:
        local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=path, dst_path=str(tmp_path))
        assert_png(Path(local).read_bytes())
    linked = mlflow.artifacts.download_artifacts(tags["radpipe.model_card"], dst_path=str(tmp_path / "card"))
    assert Path(linked).read_text() == card
    assert "not for clinical use" in version.description.lower()
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.tags["radpipe.gate"] == "passed"


def test_a_worse_candidate_is_registered_but_does_not_move_the_challenger(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    good = candidate(models, ingested_tiny, server, "good", tmp_path)
    first = run_stage(server, ingested_tiny, good, "gated", tmp_path)
    assert first.evaluation.metrics["macro_f1"] == 1.0 and sorted(first.aliases) == ["challenger", "champion"]

    worse = candidate(models, ingested_tiny, server, "constant", tmp_path)
    second = run_stage(server, ingested_tiny, worse, "gated", tmp_path)
    assert second.registered.version == "2" and second.aliases == [] and not second.decision.passed

    client = client_for(server)
    aliases = client.get_registered_model("gated").aliases
    assert {a: str(v) for a, v in aliases.items()} == {"champion": "1", "challenger": "1"}
    tags = client.get_model_version("gated", "2").tags
    assert tags["radpipe.gate"] == "failed" and tags["radpipe.registration"] == "complete"
    assert "worse than champion version 1" in tags["radpipe.gate.reasons"]
    assert tags["radpipe.gate.champion_version"] == "1" and tags["radpipe.gate.champion_macro_f1"] == "1.0000"
    # The champion was re-scored on the same test split, and the record says so.
    run = client.get_run(client.get_model_version("gated", "2").run_id)
    assert run.data.metrics["champion_test_macro_f1"] == 1.0
    page = (tmp_path / "report.html").read_text()
    assert "Gate failed" in page and "champion (version 1)" in page


def test_absolute_thresholds_fail_the_gate_even_without_a_champion(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    worse = candidate(models, ingested_tiny, server, "constant", tmp_path)
    result = run_stage(server, ingested_tiny, worse, "strict", tmp_path, gate={"min_class_recall": 0.5})
    assert not result.decision.passed and result.aliases == []
    tags = client_for(server).get_model_version("strict", "1").tags
    assert "class recall below 0.5: dogs 0.000" in tags["radpipe.gate.reasons"]
    assert client_for(server).get_registered_model("strict").aliases == {}


def test_a_plot_that_throws_leaves_the_registry_untouched(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = candidate(models, ingested_tiny, server, "good", tmp_path)
    run_stage(server, ingested_tiny, good, "fragile", tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: the reliability diagram failed")

    monkeypatch.setattr(plotting, "reliability_diagram", broken)
    client = client_for(server)
    parent = parent_run(server)
    with pytest.raises(RuntimeError, match="injected"):
        stage.run(
            dataset_dir=str(ingested_tiny),
            candidate_dirs=[str(candidate(models, ingested_tiny, server, "good", tmp_path / "again"))],
            evaluate=FAST_EVALUATE,
            register={"model_name": "fragile", "gate": {"champion_margin": 1.0}},
            track=track(server),
            parent_run_id=parent,
            data_fingerprint=read_manifest(ingested_tiny)["fingerprint"],
        )
    assert [v.version for v in client.search_model_versions("name='fragile'")] == ["1"]
    assert {a: str(v) for a, v in client.get_registered_model("fragile").aliases.items()} == {
        "champion": "1",
        "challenger": "1",
    }
    assert client.get_run(parent).info.status == "FAILED"


def run_search(url: str, dataset: Path, candidate_dirs: list[Path], name: str, out: Path):  # type: ignore[no-untyped-def]
    return stage.run(
        dataset_dir=str(dataset),
        candidate_dirs=[str(d) for d in candidate_dirs],
        evaluate={**FAST_EVALUATE, "ensemble": 2},
        register={"model_name": name},
        track=track(url),
        parent_run_id=parent_run(url),
        data_fingerprint=read_manifest(dataset)["fingerprint"],
        report_path=str(out / "report.html"),
        model_card_path=str(out / "model_card.md"),
    )


def test_an_ensemble_no_worse_on_validation_is_registered_as_one_model_in_its_own_child_run(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    good = candidate(models, ingested_tiny, server, "good", tmp_path)
    twin = shutil.copytree(good, tmp_path / "twin")  # the same predictions: the average ties on validation
    storage.atomic_write_json(twin / SPEC_FILE, read_spec(twin).with_extra(candidate="twin").to_dict())
    result = run_search(server, ingested_tiny, [good, twin], "averaged", tmp_path)
    assert result.candidate == "ensemble(good+twin)" and result.registered.uri == "models:/averaged/1"

    client = client_for(server)
    version = client.get_model_version("averaged", "1")
    assert version.tags["radpipe.members"] == "good,twin" and version.tags["radpipe.candidate"] == result.candidate
    assert version.tags["radpipe.temperature"].startswith("not fitted: 4 validation images")
    run = client.get_run(version.run_id)  # made by the stage: a child of the pipeline's run, closed
    parent = run.data.tags["mlflow.parentRunId"]
    assert parent and run.info.status == "FINISHED" and client.get_run(parent).info.status == "FINISHED"
    assert run.data.tags["radpipe.members"] == "good,twin" and "val_macro_f1" in run.data.metrics
    listed = {a.path for a in client.list_artifacts(version.run_id, "evaluation/plots")}
    assert "evaluation/plots/gradcam.png" in listed
    assert "Ensemble" in (tmp_path / "model_card.md").read_text()

    # The registered model is one model whose record lists its members; it predicts as the member does.
    registered = Classifier.load("models:/averaged/1")
    single = Classifier.load(str(good))
    assert [m.extra["candidate"] for m in registered.spec.members] == ["good", "twin"]
    test = load_split(ingested_tiny, "test", single.spec.preprocessing, single.class_names)
    np.testing.assert_allclose(registered.predict_arrays(test.images), single.predict_arrays(test.images), atol=1e-5)


def test_an_ensemble_worse_on_validation_is_not_registered(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    good = candidate(models, ingested_tiny, server, "good", tmp_path)
    constant = candidate(models, ingested_tiny, server, "constant", tmp_path)
    val = load_split(ingested_tiny, "val", read_spec(good).preprocessing, read_spec(good).class_names)
    for path in (good, constant):  # what training records: each candidate's own validation scores
        probabilities = Classifier.load(str(path)).predict_arrays(val.images)
        spec = read_spec(path).with_extra(val_metrics=validation_scores(val.labels, probabilities, 2))
        storage.atomic_write_json(path / SPEC_FILE, spec.to_dict())
    # Precondition: "constant" always says the first class; averaged in, it halves good's confidence.
    assert (
        read_spec(good).extra["val_metrics"]["val_accuracy"] > read_spec(constant).extra["val_metrics"]["val_accuracy"]
    )
    result = run_search(server, ingested_tiny, [good, constant], "not-averaged", tmp_path)
    assert result.candidate == "good"
    version = client_for(server).get_model_version("not-averaged", "1")
    assert "radpipe.members" not in version.tags and not Classifier.load("models:/not-averaged/1").spec.is_ensemble


def test_a_temperature_fitted_on_validation_is_baked_into_the_registered_model(
    server: str, models: dict[str, Path], tmp_path: Path
) -> None:
    from radpipe.components.evaluate_and_register import temperature
    from radpipe.components.ingest.ingest import ingest
    from radpipe.config import DataConfig

    # The same two classes, with enough validation images to fit a temperature on.
    make_tree(tmp_path / "src", {"cats": 40, "dogs": 40}, seed=500)
    ingest(DataConfig(uri=str(tmp_path / "src"), val_fraction=0.45), tmp_path / "dataset", tmp_path / "work")
    dataset = tmp_path / "dataset"
    trained = candidate(models, dataset, server, "trained", tmp_path)
    val = load_split(dataset, "val", read_spec(trained).preprocessing, read_spec(trained).class_names)
    assert len(val) >= temperature.MIN_IMAGES

    run_stage(server, dataset, trained, "calibrated", tmp_path, evaluate={"refit": False})
    tags = client_for(server).get_model_version("calibrated", "1").tags
    fitted = float(tags["radpipe.temperature"])
    assert temperature.BOUNDS[0] <= fitted <= temperature.BOUNDS[1]
    registered = Classifier.load("models:/calibrated/1")
    assert registered.spec.extra["temperature"]["value"] == pytest.approx(fitted, abs=1e-4)
    found = registered.spec.extra["temperature"]
    assert found["val_loss_after"] <= found["val_loss_before"]
    raw = Classifier.load(str(trained)).predict_arrays(val.images)
    np.testing.assert_allclose(
        registered.predict_arrays(val.images), temperature.scaled([raw], found["value"]), atol=1e-4
    )
    assert "Calibration**: temperature" in (tmp_path / "model_card.md").read_text()


def test_the_chosen_head_is_registered_refitted_on_train_and_validation_after_calibration(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    """Validation chooses and calibrates the train-only head; the registered model has train's train + val fit,
    divided by that temperature, and its record keeps the train-only validation scores."""
    from radpipe.components.evaluate_and_register import temperature
    from radpipe.components.ingest.ingest import ingest
    from radpipe.config import DataConfig
    from radpipe.modelspec import REFIT_HEAD_FILE

    make_tree(tmp_path / "src", {"cats": 40, "dogs": 40}, seed=500)  # enough validation images to calibrate
    ingest(DataConfig(uri=str(tmp_path / "src"), val_fraction=0.45), tmp_path / "dataset", tmp_path / "work")
    dataset = tmp_path / "dataset"
    trained = candidate(models, dataset, server, "trained", tmp_path)
    recorded = read_spec(trained).extra
    assert recorded["refit_head"]["file"] == REFIT_HEAD_FILE and (trained / REFIT_HEAD_FILE).is_file()

    run_stage(server, dataset, trained, "refitted", tmp_path)
    version = client_for(server).get_model_version("refitted", "1")
    images = recorded["refit_head"]["images"]
    assert version.tags["radpipe.refit"] == f"train+val ({images['train']}+{images['val']} images)"
    assert float(version.tags["radpipe.val_loss"]) == pytest.approx(recorded["val_metrics"]["val_loss"], abs=1e-4)
    registered = Classifier.load("models:/refitted/1")
    assert registered.spec.extra["refit"]["images"] == images
    fitted = registered.spec.extra["temperature"]["value"]

    # Expected: the candidate as trained, its head swapped for the refit by hand, scaled by the temperature.
    model, spec = load_model_dir(trained)
    refit = np.load(trained / REFIT_HEAD_FILE)
    assert not np.allclose(model.get_layer("probabilities").get_weights()[0], refit["kernel"], atol=1e-3)
    model.get_layer("probabilities").set_weights([refit["kernel"], refit["bias"]])
    test = load_split(dataset, "test", spec.preprocessing, spec.class_names)
    refitted = model.predict(test.images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(
        registered.predict_arrays(test.images), temperature.scaled([refitted], fitted), atol=1e-4
    )
    kernel, bias = registered.model.get_layer("probabilities").get_weights()  # the tiny set saturates: weights too
    np.testing.assert_allclose(kernel, refit["kernel"] / fitted, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, refit["bias"] / fitted, rtol=1e-5, atol=1e-6)
    card = (tmp_path / "model_card.md").read_text()
    assert "**Refit**: the logistic head" in card and f"{images['train']} train + {images['val']} validation" in card
    assert "**Features**: `out_relu` + `block_13_expand_relu` average-pooled at 32 px, each averaged with" in card


def test_a_candidate_without_a_refitted_head_is_registered_as_trained_and_says_why(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    good = candidate(models, ingested_tiny, server, "good", tmp_path)
    run_stage(server, ingested_tiny, good, "not-refitted", tmp_path)
    tags = client_for(server).get_model_version("not-refitted", "1").tags
    assert tags["radpipe.refit"].startswith("no: good has no refitted head (only a logistic head without fine-tuning")
    registered = Classifier.load("models:/not-refitted/1")
    test = load_split(ingested_tiny, "test", registered.spec.preprocessing, registered.class_names)
    np.testing.assert_allclose(
        registered.predict_arrays(test.images), Classifier.load(str(good)).predict_arrays(test.images), atol=1e-5
    )


def test_each_member_of_an_ensemble_gets_its_own_candidates_refitted_head(
    server: str, models: dict[str, Path], ingested_tiny: Path, tmp_path: Path
) -> None:
    from radpipe.modelspec import REFIT_HEAD_FILE

    trained = candidate(models, ingested_tiny, server, "trained", tmp_path)
    twin = shutil.copytree(trained, tmp_path / "twin")  # the same predictions: the average ties on validation
    storage.atomic_write_json(twin / SPEC_FILE, read_spec(twin).with_extra(candidate="twin").to_dict())
    refit = dict(np.load(twin / REFIT_HEAD_FILE))
    heads = {"trained": dict(np.load(trained / REFIT_HEAD_FILE)), "twin": {k: v * 0.5 for k, v in refit.items()}}
    np.savez(twin / REFIT_HEAD_FILE, **heads["twin"])  # told apart from trained's

    result = run_search(server, ingested_tiny, [trained, twin], "averaged-refit", tmp_path)
    assert result.candidate == "ensemble(trained+twin)"
    registered = Classifier.load("models:/averaged-refit/1")
    assert "value" not in registered.spec.extra["temperature"]  # 4 validation images: the weights are the refit's
    for member in registered.spec.members:
        kernel, bias = registered.model.get_layer(member.extra["layer"]).get_layer("probabilities").get_weights()
        np.testing.assert_allclose(kernel, heads[member.extra["candidate"]]["kernel"], rtol=1e-6)
        np.testing.assert_allclose(bias, heads[member.extra["candidate"]]["bias"], rtol=1e-6)
    assert registered.spec.extra["refit"]["c"].keys() == {"trained", "twin"}
