"""The cluster's S3 paths for real, on loopback: moto's S3 server stands in for MinIO.

- the MLflow server runs from the radpipe-mlflow image's environment (images/mlflow's lock, in a clean
  venv) with the arguments of manifests/base/mlflow: ``--artifacts-destination s3://...``, the in-cluster
  ``--allowed-hosts``;
- a model registered through it resolves (``radpipe deploy``) to ``s3://`` objects that exist in S3 and
  form a model folder radpipe loads, as KServe's storage initializer would download it;
- the ingest stage reads its data set from ``s3://`` inside the ingest image's environment (mlflow-skinny,
  no TensorFlow) and opens its MLflow parent run on that server;
- a radpipe model folder uploaded to S3 loads back from its ``s3://`` URI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml

from radpipe import deployment, storage
from radpipe.classifier import Classifier
from radpipe.modelspec import ModelSpec, save_model_dir
from radpipe.preprocessing import Preprocessing

from conftest import REPO, SHARED, MlflowServer, free_port, make_tree, needs_shared

_spec = importlib.util.spec_from_file_location("image_lock", REPO / "images" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)  # type: ignore[union-attr]

CLASSES = ["cats", "dogs"]
ISVC_CRD = SHARED / "schemas" / "serving.kserve.io_inferenceservices.yaml"


def manifest_mlflow_args() -> list[str]:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "manifests" / "overlays" / "kind")], capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "mlflow":
            return doc["spec"]["template"]["spec"]["containers"][0]["args"]
    raise AssertionError("no mlflow Deployment in manifests/overlays/kind")


@pytest.fixture(scope="module")
def mlflow_image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lock.build_clean_venv(REPO / "images" / "mlflow", tmp_path_factory.mktemp("mlflow-image") / "venv", False)


@pytest.fixture(scope="module")
def cluster_s3() -> Iterator[str]:
    """One S3 server (moto) for the module, so the MLflow server below starts once."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "radpipe-test",
            "AWS_SECRET_ACCESS_KEY": "radpipe-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(key, value)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(scope="module")
def cluster_mlflow(
    cluster_s3: str, mlflow_image_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``mlflow server`` as manifests/base/mlflow runs it, but on loopback with sqlite in a temporary folder."""
    tmp_path = tmp_path_factory.mktemp("cluster-mlflow")
    s3 = boto3.client("s3")
    for bucket in ("mlflow", "radpipe"):
        s3.create_bucket(Bucket=bucket)

    def args(port: int) -> list[str]:
        out = []
        for arg in manifest_mlflow_args():
            if arg.startswith("--backend-store-uri="):
                arg = f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}"
            elif arg.startswith("--host="):
                arg = "--host=127.0.0.1"
            elif arg.startswith("--port="):
                arg = f"--port={port}"
            out.append(arg)
        assert "--artifacts-destination=s3://mlflow/artifacts" in out
        return out

    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")},
        "MLFLOW_S3_ENDPOINT_URL": cluster_s3,
    }
    with MlflowServer(tmp_path, args, python=mlflow_image_python, env=env) as server:
        yield server.url


def get_status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mlflow_server_answers_in_cluster_names_and_refuses_others(cluster_mlflow: str) -> None:
    search = f"{cluster_mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    assert get_status(search, "mlflow.radpipe.svc.cluster.local:5000") == 200  # pipeline tasks
    assert get_status(search, "mlflow.radpipe.svc:5000") == 200
    assert get_status(search, "localhost:5001") == 200  # kubectl port-forward on any local port
    assert get_status(search, "attacker.example:5000") == 403  # DNS rebinding protection stays on
    assert get_status(f"{cluster_mlflow}/health", "10.244.0.7:5000") == 200  # kubelet probes


def tiny_keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs)


def spec() -> ModelSpec:
    return ModelSpec(CLASSES, Preprocessing(32), "mobilenet_v2", "none")


def register_tiny_model(tracking_uri: str, name: str) -> str:
    """Log and register a model the way radpipe does (Keras flavor, radpipe metadata); return its version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("radpipe-s3-test")
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            tiny_keras_model(), name="model", metadata={"radpipe": spec().to_dict()}, registered_model_name=name
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
    return version


def test_registered_version_resolves_to_s3_files_that_load_as_the_model(
    cluster_mlflow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cluster_mlflow)
    version = register_tiny_model(cluster_mlflow, "tiny-ct")

    import mlflow

    download_uri = mlflow.MlflowClient().get_model_version_download_uri("tiny-ct", version)
    assert download_uri.startswith("mlflow-artifacts:")  # the proxy, as clients see it
    served = deployment.resolve(deployment.ModelRef.parse("tiny-ct@champion"))
    assert (served.version, served.alias) == (version, "champion")
    assert served.storage_uri.startswith("s3://mlflow/artifacts/")

    # The objects are in S3 where the storage URI says, under the server's --artifacts-destination.
    bucket, prefix = storage.split_s3(served.storage_uri)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    relative = {key[len(prefix) :].lstrip("/") for key in keys}
    assert "MLmodel" in relative and any(k.endswith(".keras") for k in relative), relative

    # What KServe's storage initializer puts in /mnt/models: every object under the prefix.
    mnt = storage.fetch(served.storage_uri, tmp_path / "mnt", label="storage-initializer")
    classifier = Classifier.load(str(mnt))
    assert classifier.class_names == CLASSES
    probabilities = classifier.predict_arrays(np.full((2, 32, 32, 3), 120, dtype=np.uint8))
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    # `radpipe deploy` renders the same storage URI for the alias, ready for kubectl apply -f -.
    result = subprocess.run(
        [sys.executable, "-m", "radpipe", "deploy", "tiny-ct@champion"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": cluster_mlflow},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"]["name"] == "tiny-ct-champion"
    env = {e["name"]: e["value"] for e in manifest["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == served.storage_uri and env["PROTOCOL"] == "v2"
    assert f"is version {version}" in result.stderr

    # The artifact evaluate-and-register writes for a version is the same document.
    written = deployment.write_serving_manifest(tmp_path / "serving" / "isvc.yaml", "tiny-ct", version, "champion")
    assert yaml.safe_load(written.read_text()) == manifest
    if ISVC_CRD.exists():
        from test_manifests import inference_service_validator

        assert not list(inference_service_validator().iter_errors(manifest))


@needs_shared(ISVC_CRD)
def test_deploy_writes_into_the_overlay_folder_and_reports_unknown_aliases(cluster_mlflow: str, tmp_path: Path) -> None:
    register_tiny_model(cluster_mlflow, "lungs")
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster_mlflow}
    out = tmp_path / "overlay"
    out.mkdir()
    written = subprocess.run(
        [sys.executable, "-m", "radpipe", "deploy", "models:/lungs/1", "-o", str(out), "--image-registry", "ghcr.io/x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr
    (path,) = out.glob("inferenceservice-*.yaml")
    assert path.name == "inferenceservice-lungs-v1.yaml"
    container = yaml.safe_load(path.read_text())["spec"]["predictor"]["containers"][0]
    assert container["image"].startswith("ghcr.io/x/radpipe-serving:")
    missing = subprocess.run(
        [sys.executable, "-m", "radpipe", "deploy", "lungs@staging"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2
    assert (
        missing.stderr.startswith("error: cannot resolve models:/lungs@staging") and "Traceback" not in missing.stderr
    )


def test_ingest_reads_s3_in_the_ingest_image_environment(cluster_mlflow: str, tmp_path: Path) -> None:
    """The ingest image (no TensorFlow, mlflow-skinny) ingests from s3:// and opens the MLflow parent run."""
    source = make_tree(tmp_path / "src", {"cats": 10, "dogs": 10})
    storage.upload(source, "s3://radpipe/data/tiny")
    python = lock.build_clean_venv(REPO / "images" / "ingest", tmp_path / "ingest-venv")
    output = tmp_path / "dataset"
    script = (
        "import json, sys\n"
        "from radpipe.components.ingest import stage\n"
        "data = {'uri': 's3://radpipe/data/tiny'}\n"
        "r = stage.run(data=data, track={}, output_dir=sys.argv[1], pipeline_job='run-1')\n"
        "print(json.dumps({'run': r.parent_run_id, 'classes': r.class_names, 'fingerprint': r.fingerprint}))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": cluster_mlflow,
        **{k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = subprocess.run(
        [str(python), "-c", script, str(output)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert outputs["classes"] == CLASSES
    assert (output / "manifest.json").is_file() or any(output.iterdir())

    import mlflow

    run = mlflow.MlflowClient(cluster_mlflow).get_run(outputs["run"])
    assert run.data.tags["radpipe.data_fingerprint"] == outputs["fingerprint"]
    assert run.data.params["data.uri"] == "s3://radpipe/data/tiny"
    assert run.info.status == "RUNNING"  # evaluate-and-register ends the pipeline's parent run


def test_model_folder_uploaded_to_s3_loads_from_its_uri(cluster_s3: str, tmp_path: Path) -> None:
    boto3.client("s3").create_bucket(Bucket="models")
    save_model_dir(tiny_keras_model(), spec(), tmp_path / "model")
    storage.upload(tmp_path / "model", "s3://models/tiny/1")
    classifier = Classifier.load("s3://models/tiny/1")
    assert classifier.class_names == CLASSES and classifier.image_size == 32
    assert classifier.predict_arrays(np.zeros((1, 32, 32, 3), dtype=np.uint8)).shape == (1, 2)
