"""manifests/ checked statically and strictly: what `make cluster-up` applies must work the first time.

kustomize builds every overlay; kubernetes-validate (schemas of the kind node's Kubernetes, offline)
passes every core object; every InferenceService radpipe renders validates against KServe's CRD schema;
checkov passes with each skipped check justified where it is skipped; and what the pipeline, MLflow and
KServe expect of each other (names, keys, ports, hosts) is consistent across the files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from radpipe import deployment
from radpipe.images import MLFLOW_IMAGE, image_ref
from radpipe.pipelines.training_pipeline import (
    CLUSTER_ENV_CONFIG_MAP,
    CLUSTER_ENV_KEYS,
    CLUSTER_S3_SECRET,
    CLUSTER_SECRET_KEYS,
)

from conftest import REPO, SHARED, needs_shared

MANIFESTS = REPO / "manifests"
OVERLAYS = sorted(p.parent for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
TOOLS = REPO / ".tools" / "bin"
KUBERNETES_VERSION = "1.33.0"  # manifests/kind-cluster.yaml runs kindest/node:v1.33.4
ISVC_CRD = SHARED / "schemas" / "serving.kserve.io_inferenceservices.yaml"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make test does it first)")
    return str(path)


def kustomize(overlay: Path) -> str:
    result = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay.name: [d for d in yaml.safe_load_all(kustomize(overlay)) if d] for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def kind(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["kind"]


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str = "radpipe") -> dict[str, Any]:
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return doc
    raise AssertionError(f"{kind} {namespace}/{name} is not in the rendered overlay")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def sample_inference_service() -> dict[str, Any]:
    served = deployment.ServedVersion("chest-ct", "3", "s3://mlflow/artifacts/1/models/m-abc/artifacts", "champion")
    return deployment.render_inference_service(served)


def test_there_is_a_kind_overlay_and_every_overlay_builds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert "kind" in rendered
    for name, docs in rendered.items():
        assert docs, f"overlay {name} renders nothing"
        for doc in docs:
            assert doc["metadata"].get("namespace") or doc["kind"] == "Namespace", (
                f"{doc['kind']} {doc['metadata']['name']} has no namespace: say it in the manifest"
            )


def test_kubernetes_validate_passes_every_core_object(tmp_path: Path) -> None:
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay.name}.yaml"
        path.write_text(kustomize(overlay))
        files.append(str(path))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--kubernetes-version", KUBERNETES_VERSION, "--strict", "--quiet", *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_a_broken_object(tmp_path: Path) -> None:
    """The validator really runs offline against real schemas: a mistyped field fails it."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: radpipe}\n"
        "spec: {replicas: one, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, "
        "spec: {containers: [{name: c, image: i}]}}}\n"
    )
    result = subprocess.run(
        [tool("kubernetes-validate"), "--kubernetes-version", KUBERNETES_VERSION, "--strict", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "replicas" in result.stdout + result.stderr


def inference_service_validator() -> Any:
    import jsonschema

    crd = yaml.safe_load(ISVC_CRD.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v.get("served") and v["name"] == "v1beta1"]
    schema = served["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


@needs_shared(ISVC_CRD)
def test_rendered_inference_services_validate_against_the_kserve_crd(tmp_path: Path) -> None:
    validator = inference_service_validator()
    manifests = [
        sample_inference_service(),
        deployment.render_inference_service(
            deployment.ServedVersion("lungs", "12", "s3://mlflow/artifacts/2/models/m-x/artifacts"),
            namespace="imaging",
            image="ghcr.io/acme/radpipe-serving:1.0.0",
            service_account="reader",
        ),
    ]
    # ... and every InferenceService checked in under manifests/ (what `radpipe deploy -o` writes there).
    for path in MANIFESTS.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "InferenceService":
                manifests.append(doc)
    for manifest in manifests:
        errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    # The schema is strict enough to catch a mistake: a container with a string for its port.
    bad = sample_inference_service()
    bad["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    assert list(validator.iter_errors(bad))


def test_checkov_passes_with_every_skip_justified(tmp_path: Path) -> None:
    rendered_dir = tmp_path / "rendered"
    rendered_dir.mkdir()
    for overlay in OVERLAYS:
        (rendered_dir / f"{overlay.name}.yaml").write_text(kustomize(overlay))
    (rendered_dir / "inferenceservice.yaml").write_text(deployment.to_yaml(sample_inference_service()))
    result = subprocess.run(
        [tool("checkov"), "-d", str(rendered_dir), "--framework", "kubernetes", "--compact", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # A skip is an annotation `checkov.io/skipN: CHECK=reason` with a comment above it: no bare skips.
    for path in MANIFESTS.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "checkov.io/skip" in line:
                check, _, reason = line.split(":", 1)[1].strip().partition("=")
                assert check.startswith("CKV") and len(reason.split()) >= 4, f"{path}:{i + 1}: give a reason"
                above = [entry.strip() for entry in lines[max(0, i - 4) : i]]
                assert any(entry.startswith("#") for entry in above), f"{path}:{i + 1}: justify the skip in a comment"


def test_every_workload_has_resources_probes_and_a_restricted_security_context(kind: list[dict[str, Any]]) -> None:
    workloads = [d for d in kind if d["kind"] in WORKLOADS]
    assert {d["metadata"]["name"] for d in workloads} == {"minio", "mlflow", "minio-buckets"}
    for doc in workloads:
        spec = pod_spec(doc)
        where = f"{doc['kind']} {doc['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            assert "@sha256:" in container["image"] or container["image"].startswith("radpipe-"), where
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
            assert security["readOnlyRootFilesystem"] is True, where
            if doc["kind"] != "Job":
                assert "readinessProbe" in container and "livenessProbe" in container, where


def test_minio_credentials_come_from_generated_secrets(kind: list[dict[str, Any]]) -> None:
    root = find(kind, "Secret", "minio-root")
    assert set(root["data"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    for namespace in ("radpipe", "kubeflow"):
        assert set(find(kind, "Secret", CLUSTER_S3_SECRET, namespace)["data"]) == set(CLUSTER_SECRET_KEYS)
    env = {e["name"]: e for e in pod_spec(find(kind, "Deployment", "minio"))["containers"][0]["env"]}
    password = env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "minio-root", "key": "MINIO_ROOT_PASSWORD"}
    volumes = {v["name"]: v for v in pod_spec(find(kind, "Deployment", "minio"))["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert find(kind, "PersistentVolumeClaim", claim)["spec"]["resources"]["requests"]["storage"]
    script = pod_spec(find(kind, "Job", "minio-buckets"))["containers"][0]["args"][0]
    assert "mc mb --ignore-existing local/radpipe local/mlflow" in script


def test_mlflow_server_uses_a_database_s3_artifacts_and_in_cluster_hosts(kind: list[dict[str, Any]]) -> None:
    container = pod_spec(find(kind, "Deployment", "mlflow"))["containers"][0]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    assert args["backend-store-uri"].startswith("sqlite:////var/lib/mlflow/")
    assert args["artifacts-destination"] == deployment.ARTIFACTS_DESTINATION
    assert "--serve-artifacts" in container["args"]
    hosts = args["allowed-hosts"].split(",")
    env = find(kind, "ConfigMap", CLUSTER_ENV_CONFIG_MAP, "kubeflow")["data"]
    tracking_host = env["MLFLOW_TRACKING_URI"].removeprefix("http://")
    assert tracking_host in hosts and tracking_host.split(":")[0] in hosts and "localhost:*" in hosts
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/mlflow" in mounts
    assert container["image"] == image_ref(MLFLOW_IMAGE)


def test_kfp_launcher_puts_the_pipeline_root_on_minio(kind: list[dict[str, Any]]) -> None:
    launcher = find(kind, "ConfigMap", "kfp-launcher", "kubeflow")["data"]
    bucket = launcher["defaultPipelineRoot"].removeprefix("s3://").split("/")[0]
    assert launcher["defaultPipelineRoot"].startswith("s3://") and bucket == "radpipe"
    # Field names of kubeflow/pipelines 2.17.0 backend/src/v2/config/s3.go (S3ProviderDefault, S3SecretRef).
    default = yaml.safe_load(launcher["providers"])["s3"]["default"]
    assert set(default) == {"endpoint", "region", "disableSSL", "forcePathStyle", "credentials"}
    assert default["endpoint"] == "minio.radpipe.svc.cluster.local:9000" and default["disableSSL"] is True
    ref = default["credentials"]["secretRef"]
    assert default["credentials"]["fromEnv"] is False
    secret = find(kind, "Secret", ref["secretName"], "kubeflow")
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["data"])
    service = find(kind, "Service", "minio")
    assert 9000 in {p["port"] for p in service["spec"]["ports"]}


def test_pipeline_tasks_get_the_environment_the_compiled_pipeline_names(kind: list[dict[str, Any]]) -> None:
    env = find(kind, "ConfigMap", CLUSTER_ENV_CONFIG_MAP, "kubeflow")["data"]
    assert set(env) == set(CLUSTER_ENV_KEYS)
    assert env["RADPIPE_MLFLOW_ARTIFACTS_DESTINATION"] == deployment.ARTIFACTS_DESTINATION
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.radpipe.svc.cluster.local:9000"
    assert env["RADPIPE_SERVING_IMAGE"].startswith("radpipe-serving:")


def test_kserve_reads_models_with_the_annotated_secret_of_its_service_account(kind: list[dict[str, Any]]) -> None:
    account = find(kind, "ServiceAccount", deployment.SERVICE_ACCOUNT)
    (listed,) = account["secrets"]
    secret = find(kind, "Secret", listed["name"])
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "minio.radpipe.svc.cluster.local:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    # KServe's default credential keys (inferenceservice-config: s3AccessKeyIDName/s3SecretAccessKeyName).
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])
    isvc = sample_inference_service()
    assert isvc["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]


def test_kind_cluster_config_and_makefile_pin_what_they_install() -> None:
    cluster = yaml.safe_load((MANIFESTS / "kind-cluster.yaml").read_text())
    image = cluster["nodes"][0]["image"]
    assert image.startswith(f"kindest/node:v{KUBERNETES_VERSION.rsplit('.', 1)[0]}.") and "@sha256:" in image
    makefile = (REPO / "Makefile").read_text()
    for pinned in ("KFP_VERSION := 2.17.0", "KSERVE_VERSION := v0.20.0", "CERT_MANAGER_VERSION := v1.17.0"):
        assert pinned in makefile
    assert "?ref=$(KFP_VERSION)" in makefile and "releases/download/$(KSERVE_VERSION)" in makefile
