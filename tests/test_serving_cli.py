"""``radpipe serve`` and ``python -m radpipe.serving``: models from the MLflow registry, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from radpipe.classifier import Classifier
from radpipe.cli import main as radpipe_main
from radpipe.errors import RadpipeError

from conftest import SAMPLE, ServerProcess, infer_image, lan_address, reachable

IMAGE = SAMPLE / "test" / "normal" / "10 - Copy (3).png"


def register(model_dir: Path, tracking_uri: str, name: str) -> str:
    """Log ``model_dir`` to MLflow and register it as ``name`` with the alias 'champion', as the pipeline does."""
    import mlflow

    from radpipe import registry, tracking
    from radpipe.modelspec import load_model_dir
    from radpipe.registration import log_model, register

    experiment = tracking.setup_experiment(tracking_uri, "serving-test")
    run_id = mlflow.MlflowClient().create_run(experiment).info.run_id
    model, spec = load_model_dir(model_dir)
    info = log_model(model, spec, np.zeros((1, 32, 32, 3), np.float32), run_id)
    client = mlflow.MlflowClient()
    tags = {registry.GATE_TAG: registry.PASSED}  # what evaluate-and-register records for a version that passed
    registered = register(
        client, name, info.model_uri, run_id, tags, "served by a test", True, lambda _: None, model_id=info.model_id
    )
    assert "champion" in registered.aliases
    return registered.version


def test_radpipe_serve_loads_a_registered_model_by_alias_and_from_its_mounted_folder(
    served_model_dir: Path, use_mlflow: str, tmp_path: Path
) -> None:
    import mlflow

    from radpipe.serving.app import load_model

    version = register(served_model_dir, use_mlflow, "chest-ct-serving")
    expected = Classifier.load(str(served_model_dir)).predict([IMAGE])[0]
    server = ServerProcess(
        [sys.executable, "-m", "radpipe", "serve", "models:/chest-ct-serving@champion"],
        tmp_path / "server",
        env={"MLFLOW_TRACKING_URI": use_mlflow},
        port_flag="--port",
    )
    try:
        server.wait_ready()
        # The URL's model name defaults to the registered model's name.
        with urllib.request.urlopen(f"{server.url}/v2/models", timeout=30) as response:
            assert json.load(response) == {"models": ["chest-ct-serving"]}
        # The alias is resolved to its version, which metadata, answers and metrics report.
        with urllib.request.urlopen(f"{server.url}/v2/models/chest-ct-serving", timeout=30) as response:
            meta = json.load(response)
        assert meta["versions"] == [version] and meta["radpipe"]["model_uri"] == f"models:/chest-ct-serving/{version}"
        answer = infer_image(server.url, "chest-ct-serving", IMAGE, full=True)
        assert answer["model_version"] == version
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
            assert f'model="chest-ct-serving",version="{version}"' in response.read().decode()
        # No --host: this machine only (where it has another interface to try).
        address = lan_address()
        assert reachable("127.0.0.1", server.port) and not (address and reachable(address, server.port))
        answer = {o["name"]: o for o in answer["outputs"]}
    finally:
        server.stop()
    assert "this machine only" in server.log()
    assert answer["label"]["data"] == [expected.label]
    np.testing.assert_allclose(answer["probabilities"]["data"], list(expected.scores.values()), rtol=1e-4, atol=1e-6)
    assert "upload page" in server.log() and "/ui/" in server.log()
    assert sorted(server.workdir.rglob("*")) == []  # the download went to a temporary folder, now gone

    # In a cluster, KServe's storage initializer copies the version's storageUri (the MLflow model folder)
    # to /mnt/models, and the predictor loads that folder.
    mounted = Path(mlflow.artifacts.download_artifacts(f"models:/chest-ct-serving/{version}", dst_path=str(tmp_path)))
    assert (mounted / "MLmodel").is_file()
    model = load_model(str(mounted), "chest-ct", model_version=version)  # what radpipe deploy's manifest says
    try:
        meta = model.metadata()
        assert meta["name"] == "chest-ct" and meta["class_names"] == Classifier.load(str(served_model_dir)).class_names
        assert meta["versions"] == [version]
        assert model.gradcam is not None
        np.testing.assert_allclose(
            model.classifier.predict([IMAGE])[0].scores["normal"], expected.scores["normal"], rtol=1e-5
        )
    finally:
        model.stop()


def test_serve_reports_a_missing_model_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert radpipe_main(["serve", str(tmp_path / "no-such-model")]) == 2
    assert "error:" in capsys.readouterr().err


def test_serve_rejects_nonsense_limits(capsys: pytest.CaptureFixture[str], served_model_dir: Path) -> None:
    assert radpipe_main(["serve", str(served_model_dir), "--max_batch_size", "0"]) == 2
    assert "--max_batch_size must be a positive integer" in capsys.readouterr().err


def test_serve_without_kserve_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from radpipe.serving import require_kserve

    monkeypatch.setitem(sys.modules, "kserve", None)  # import kserve -> ImportError
    with pytest.raises(RadpipeError, match=r"pip install 'radpipe\[serve\]'"):
        require_kserve()


def test_the_container_command_reports_a_bad_model_dir_and_extra_workers(tmp_path: Path) -> None:
    missing = tmp_path / "mnt" / "models"
    done = subprocess.run(
        [sys.executable, "-m", "radpipe.serving", "--model_dir", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and f"error: {missing}" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "radpipe.serving", "--model_dir", str(missing), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--workers must be 1" in done.stderr
