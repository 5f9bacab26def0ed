"""radpipe.deployment: model references, the MLflow-to-S3 mapping and the InferenceService it renders.
(Resolution against a real MLflow server on S3 is in test_cluster_s3.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from radpipe import deployment
from radpipe.deployment import DeployError, ModelRef, ServedVersion

SERVED = ServedVersion("chest-ct", "3", "s3://mlflow/artifacts/1/models/m-abc/artifacts", "champion")


def test_model_references() -> None:
    assert ModelRef.parse("chest-ct@champion") == ModelRef("chest-ct", alias="champion")
    assert ModelRef.parse("models:/chest-ct@challenger").uri == "models:/chest-ct@challenger"
    assert ModelRef.parse("chest-ct/3") == ModelRef("chest-ct", version="3")
    assert ModelRef.parse("chest-ct") == ModelRef("chest-ct", alias="champion")
    for bad in ("", "@champion", "chest-ct@", "chest-ct/latest", "a/b@c"):
        with pytest.raises(DeployError, match="NAME@ALIAS"):
            ModelRef.parse(bad)


def test_proxied_artifact_uris_map_to_the_servers_s3_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(deployment.ARTIFACTS_DESTINATION_ENV, raising=False)
    uri = "mlflow-artifacts:/1/models/m-abc/artifacts"
    assert deployment.storage_uri_for(uri) == "s3://mlflow/artifacts/1/models/m-abc/artifacts"
    assert deployment.storage_uri_for("mlflow-artifacts://mlflow:5000/1/x", "s3://b/p/") == "s3://b/p/1/x"
    assert deployment.storage_uri_for("s3://elsewhere/m/", "s3://ignored") == "s3://elsewhere/m"
    monkeypatch.setenv(deployment.ARTIFACTS_DESTINATION_ENV, "s3://site/mlflow")
    assert deployment.storage_uri_for(uri) == "s3://site/mlflow/1/models/m-abc/artifacts"
    with pytest.raises(DeployError, match="KServe cannot read"):
        deployment.storage_uri_for("file:///home/me/mlruns/1/models/m/artifacts")
    with pytest.raises(DeployError, match="must be an s3:// URI"):
        deployment.storage_uri_for(uri, "/local/mlartifacts")


def test_service_names_are_valid_kubernetes_names() -> None:
    assert deployment.service_name("chest-ct", "champion") == "chest-ct-champion"
    assert deployment.service_name("Chest_CT", version="12") == "chest-ct-v12"
    assert deployment.service_name("3d.lungs", "prod") == "m-3d-lungs-prod"
    long = deployment.service_name("x" * 80, "champion")
    assert len(long) <= deployment.MAX_NAME_LENGTH and not long.endswith("-")


def test_inference_service_serves_the_version_with_radpipes_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(deployment.SERVING_IMAGE_ENV, raising=False)
    isvc = deployment.render_inference_service(SERVED)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == "chest-ct-champion" and isvc["metadata"]["namespace"] == "radpipe"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["metadata"]["labels"]["radpipe.io/model-version"] == "3"
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "radpipe-kserve"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == "radpipe-serving:0.1.0"
    assert container["args"] == [
        "--model_name=chest-ct",
        "--model_dir=/mnt/models",
        "--http_port=8080",
        "--model_version=3",
    ]
    assert "command" not in container  # the image's entry point stays, with its --host=0.0.0.0
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == SERVED.storage_uri and env["PROTOCOL"] == "v2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/chest-ct/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    monkeypatch.setenv(deployment.SERVING_IMAGE_ENV, "ghcr.io/acme/radpipe-serving:2.0.0")
    assert deployment.render_inference_service(SERVED)["spec"]["predictor"]["containers"][0]["image"].startswith(
        "ghcr.io/acme/"
    )
    with pytest.raises(DeployError, match="not a valid InferenceService name"):
        deployment.render_inference_service(SERVED, name="Bad_Name")
    with pytest.raises(DeployError, match="not a storage URI KServe can fetch"):
        deployment.render_inference_service(ServedVersion("m", "1", "dbfs:/models/m"))


def test_files_of_a_local_store_render_as_a_preview_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / ".radpipe" / "mlartifacts" / "1" / "models" / "m-1" / "artifacts"
    uri, warning = deployment.locate("models:/chest-ct/1", folder.as_uri())
    assert uri == folder.as_uri() and "a cluster's KServe cannot read them" in warning and "--storage-uri" in warning
    assert deployment.locate("models:/chest-ct/1", str(folder)) == (uri, warning)  # a plain path, too
    assert deployment.locate("models:/c/1", "s3://b/m") == ("s3://b/m", "")
    served = ServedVersion("chest-ct", "1", uri, "champion", warning)
    text = deployment.to_yaml(deployment.render_inference_service(served), warning)
    assert text.startswith("# WARNING: the files of models:/chest-ct/1 are on this machine")
    manifest = yaml.safe_load(text)  # the comment does not change the document kubectl reads
    env = {e["name"]: e["value"] for e in manifest["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == uri


def test_write_manifest_to_a_file_or_into_a_folder(tmp_path: Path) -> None:
    manifest = deployment.render_inference_service(SERVED)
    into = deployment.write_manifest(manifest, tmp_path)
    assert into == tmp_path / "inferenceservice-chest-ct-champion.yaml"
    assert yaml.safe_load(into.read_text()) == manifest
    named = deployment.write_manifest(manifest, tmp_path / "sub" / "isvc.yaml")
    assert named.read_text() == into.read_text()


def test_deploy_without_any_registry_says_where_it_looked_and_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RADPIPE_HOME")}
    result = subprocess.run(
        [sys.executable, "-m", "radpipe", "deploy", "chest-ct@champion"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: no MLflow registry found: MLFLOW_TRACKING_URI is not set")
    assert str(tmp_path) in result.stderr and not (tmp_path / ".radpipe").exists()


def test_deploy_renders_a_local_runs_version_with_a_warning_or_a_given_storage_uri(tmp_path: Path) -> None:
    """After `radpipe run` (the embedded store), `radpipe deploy` from any folder below finds the store and
    prints the manifest: a preview naming the local files, or with --storage-uri where a copy lives."""
    from test_cluster_s3 import register_tiny_model

    from radpipe import tracking

    uri = tracking.embedded_tracking_uri(tmp_path)
    tracking.setup_experiment(uri, "radpipe-s3-test")  # as the stages do: artifacts beside the database
    version = register_tiny_model(uri, "local-ct")
    below = tmp_path / "scans" / "today"
    below.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RADPIPE_HOME")}
    deploy = [sys.executable, "-m", "radpipe", "deploy", "local-ct@champion"]
    preview = subprocess.run(deploy, capture_output=True, text=True, env=env, cwd=below, timeout=120)
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.startswith("# WARNING: the files of models:/local-ct/") and "warning:" in preview.stderr
    manifest = yaml.safe_load(preview.stdout)
    env_vars = {e["name"]: e["value"] for e in manifest["spec"]["predictor"]["containers"][0]["env"]}
    assert env_vars["STORAGE_URI"].startswith((tmp_path / ".radpipe" / "mlartifacts").as_uri())
    assert f"registry sqlite:///{tmp_path / '.radpipe' / 'mlflow.db'}" in preview.stderr
    copied = subprocess.run(
        [*deploy, "--storage-uri", "s3://models/local-ct/1/"], capture_output=True, text=True, env=env, cwd=below
    )
    assert copied.returncode == 0 and "warning" not in copied.stderr and copied.stdout.startswith("apiVersion")
    assert "s3://models/local-ct/1\n" in copied.stdout
    bad = subprocess.run([*deploy, "--storage-uri", "ftp://x/y"], capture_output=True, text=True, env=env, cwd=below)
    assert bad.returncode == 2 and "not a storage URI KServe can fetch" in bad.stderr

    # The serving manifest evaluate-and-register writes for such a version is the same preview.
    path = deployment.write_serving_manifest(tmp_path / "serving.yaml", "local-ct", version, "champion")
    assert path.read_text() == preview.stdout
    with pytest.raises(DeployError, match="cannot resolve models:/local-ct/99"):
        deployment.write_serving_manifest(tmp_path / "other.yaml", "local-ct", "99")
