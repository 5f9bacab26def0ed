"""The KServe ``InferenceService`` that serves one registered model version.

One renderer, two callers: evaluate-and-register writes it as the run's serving manifest for the version it
registered, and ``radpipe deploy NAME@ALIAS`` renders it for whatever version an alias points at, for
``kubectl apply``. What a run proposes and what an operator applies are therefore the same document.

The predictor is radpipe's own serving image (``images/serving``, a KServe custom predictor speaking the V2
protocol). KServe's storage initializer copies the version's files from MinIO/S3 into ``/mnt/models``
before the predictor starts: ``STORAGE_URI`` names them, and the service account carries the S3 secret
with KServe's ``serving.kserve.io/s3-*`` annotations (``manifests/base/serving``).

The MLflow server stores artifacts behind its proxy (``--artifacts-destination s3://...``) and hands
clients ``mlflow-artifacts:/`` URIs; :func:`storage_uri_for` maps those back to the ``s3://`` objects
KServe reads.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from radpipe import storage
from radpipe.errors import RadpipeError
from radpipe.images import SERVING_IMAGE, USER_ID, image_ref
from radpipe.model_uri import ModelUri, alias_uri, version_uri

logger = logging.getLogger(__name__)

NAMESPACE = "radpipe"
SERVICE_ACCOUNT = "radpipe-kserve"
ARTIFACTS_DESTINATION = "s3://mlflow/artifacts"
"""The MLflow server's ``--artifacts-destination`` in ``manifests/base/mlflow``."""
ARTIFACTS_DESTINATION_ENV = "RADPIPE_MLFLOW_ARTIFACTS_DESTINATION"
SERVING_IMAGE_ENV = "RADPIPE_SERVING_IMAGE"
MODEL_DIR = "/mnt/models"
HTTP_PORT = 8080
LABEL_PREFIX = "radpipe.io"
DEFAULT_ALIAS = "champion"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# KServe appends "-predictor" (and more in some modes) to the InferenceService name for its Service and
# Deployment; 45 characters leaves room within Kubernetes' 63-character limit.
MAX_NAME_LENGTH = 45


class DeployError(RadpipeError):
    """A model reference cannot be resolved or rendered into a serving manifest."""


@dataclass(frozen=True)
class ModelRef:
    """``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME`` (its ``champion``), optionally with ``models:/``."""

    name: str
    alias: str = ""
    version: str = ""

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        parts = ModelUri.parse(text)
        if parts.is_alias:
            return cls(name=parts.name, alias=str(parts.alias))
        if parts.is_version:
            return cls(name=parts.name, version=str(parts.version))
        if parts.name and parts.alias is None and parts.version is None:
            return cls(name=parts.name, alias=DEFAULT_ALIAS)
        raise DeployError(
            f"{text!r} is not a model reference; use NAME@ALIAS (e.g. chest-ct@champion) or NAME/VERSION (chest-ct/3)"
        )

    @property
    def uri(self) -> str:
        return alias_uri(self.name, self.alias) if self.alias else version_uri(self.name, self.version)


@dataclass(frozen=True)
class ServedVersion:
    """A registered version and where its files are for KServe."""

    name: str
    version: str
    storage_uri: str
    alias: str = ""
    warning: str = ""
    """Set when the files are where a cluster cannot fetch them (the manifest is then a preview)."""


def storage_uri_for(download_uri: str, artifacts_destination: str = "") -> str:
    """The ``s3://`` location of the files behind an MLflow artifact URI.

    ``mlflow-artifacts:/<path>`` (the proxied form, with or without ``//host:port``) is
    ``<artifacts_destination>/<path>``; an ``s3://`` URI (a server without the proxy) is already there.
    """
    destination = artifacts_destination or os.environ.get(ARTIFACTS_DESTINATION_ENV) or ARTIFACTS_DESTINATION
    parsed = urllib.parse.urlparse(download_uri)
    if parsed.scheme == "s3":
        return download_uri.rstrip("/")
    if parsed.scheme == "mlflow-artifacts":
        if not destination.startswith("s3://"):
            raise DeployError(
                f"the MLflow artifacts destination must be an s3:// URI for KServe to read it, got {destination!r}; "
                f"pass --artifacts-destination or set {ARTIFACTS_DESTINATION_ENV} to the server's "
                "--artifacts-destination"
            )
        return f"{destination.rstrip('/')}/{parsed.path.strip('/')}"
    raise DeployError(
        f"the model's files are at {download_uri}, which KServe cannot read from the cluster; "
        "run the MLflow server with --artifacts-destination s3://... (manifests/base/mlflow) and register again"
    )


LOCAL_FILES_WARNING = (
    "the files of {model} are on this machine ({uri}): a cluster's KServe cannot read them, so this manifest "
    "is a preview (and what `make test-containers` runs in a local container). For a cluster, register with "
    "an MLflow server whose --artifacts-destination is s3:// (manifests/base/mlflow, docs/cluster.md), or copy "
    "the folder to object storage and pass --storage-uri s3://BUCKET/PATH"
)
KSERVE_STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf", "file")
"""``storageUri`` schemes KServe's storage initializer fetches (``file`` only on the node itself)."""


def locate(model: str, download_uri: str, artifacts_destination: str = "") -> tuple[str, str]:
    """Where KServe should fetch ``model``'s files, and a warning when that is a local folder.

    The embedded store of local runs keeps files under ``.radpipe/``: the manifest is still rendered (a
    preview, or a local container's mount), naming them as ``file://`` with :data:`LOCAL_FILES_WARNING`.
    """
    parsed = urllib.parse.urlparse(download_uri)
    if parsed.scheme in ("", "file"):
        uri = Path(parsed.path if parsed.scheme else download_uri).resolve().as_uri()
        return uri, LOCAL_FILES_WARNING.format(model=model, uri=uri)
    return storage_uri_for(download_uri, artifacts_destination), ""


def resolve(ref: ModelRef, artifacts_destination: str = "", storage_uri: str = "") -> ServedVersion:
    """Look ``ref`` up in the MLflow registry at ``MLFLOW_TRACKING_URI`` and locate its files.

    ``storage_uri`` overrides where KServe fetches them (a copy in object storage); otherwise they are
    located from the registry (see :func:`locate`, whose warning lands in ``ServedVersion.warning``).
    """
    version, download_uri = lookup(ref)
    if storage_uri:
        check_storage_uri(storage_uri)
        return ServedVersion(ref.name, version, storage_uri.rstrip("/"), ref.alias)
    located, warning = locate(version_uri(ref.name, version), download_uri, artifacts_destination)
    return ServedVersion(ref.name, version, located, ref.alias, warning)


def check_storage_uri(uri: str) -> None:
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme not in KSERVE_STORAGE_SCHEMES:
        raise DeployError(
            f"{uri!r} is not a storage URI KServe can fetch; use one of "
            f"{', '.join(s + '://' for s in KSERVE_STORAGE_SCHEMES)} (e.g. s3://bucket/models/chest-ct/3)"
        )


def lookup(ref: ModelRef) -> tuple[str, str]:
    """The version number ``ref`` names and the MLflow URI of its files."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if ref.alias:
            version = str(client.get_model_version_by_alias(ref.name, ref.alias).version)
        else:
            version = str(client.get_model_version(ref.name, ref.version).version)
        download_uri = client.get_model_version_download_uri(ref.name, version)
    except MlflowException as exc:
        raise DeployError(
            f"cannot resolve {ref.uri} in the MLflow registry at {mlflow.get_tracking_uri()}: {exc.message}. "
            "Check the name and alias, and MLFLOW_TRACKING_URI (e.g. after "
            "`kubectl -n radpipe port-forward svc/mlflow 5000:5000`, http://localhost:5000)."
        ) from exc
    except OSError as exc:
        raise DeployError(
            f"cannot reach MLflow at {mlflow.get_tracking_uri()}: {exc}; check MLFLOW_TRACKING_URI"
        ) from exc
    return version, download_uri


def service_name(model_name: str, alias: str = "", version: str = "") -> str:
    """A valid InferenceService name: ``chest-ct-champion``, ``chest-ct-v3``."""
    suffix = alias or (f"v{version}" if version else "")
    raw = f"{model_name}-{suffix}" if suffix else model_name
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if name and not name[0].isalpha():
        name = f"m-{name}"
    name = name[:MAX_NAME_LENGTH].rstrip("-")
    if not _DNS_LABEL.match(name):
        raise DeployError(
            f"cannot make a Kubernetes name from {raw!r}; pass --name with lowercase letters, digits and '-'"
        )
    return name


def _label_value(text: str) -> str:
    """Kubernetes label values: up to 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def render_inference_service(
    served: ServedVersion,
    *,
    name: str = "",
    namespace: str = NAMESPACE,
    image: str = "",
    service_account: str = SERVICE_ACCOUNT,
    cpu: tuple[str, str] = ("500m", "2"),
    memory: tuple[str, str] = ("1Gi", "2Gi"),
) -> dict[str, Any]:
    """The InferenceService (a plain dict) serving ``served`` with radpipe's predictor over the V2 protocol.

    ``image`` defaults to ``RADPIPE_SERVING_IMAGE`` or ``radpipe-serving:<radpipe version>``.
    """
    check_storage_uri(served.storage_uri)
    name = name or service_name(served.name, served.alias, served.version)
    if not _DNS_LABEL.match(name) or len(name) > MAX_NAME_LENGTH:
        raise DeployError(
            f"{name!r} is not a valid InferenceService name: up to {MAX_NAME_LENGTH} lowercase letters, digits "
            "and '-', starting with a letter"
        )
    image = image or os.environ.get(SERVING_IMAGE_ENV) or image_ref(SERVING_IMAGE)
    model_uri = version_uri(served.name, served.version)
    labels = {
        "app.kubernetes.io/name": "radpipe-serving",
        "app.kubernetes.io/part-of": "radpipe",
        f"{LABEL_PREFIX}/model": _label_value(served.name),
        f"{LABEL_PREFIX}/model-version": _label_value(served.version),
    }
    annotations = {
        # Standard (plain Deployment + Service) needs neither Knative nor Istio: right for kind.
        "serving.kserve.io/deploymentMode": "Standard",
        f"{LABEL_PREFIX}/model-uri": model_uri,
    }
    if served.alias:
        labels[f"{LABEL_PREFIX}/alias"] = _label_value(served.alias)
        annotations[f"{LABEL_PREFIX}/alias-uri"] = alias_uri(served.name, served.alias)
    probe_path = f"/v2/models/{served.name}/ready"
    container = {
        "name": "kserve-container",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entry point adds --host=0.0.0.0 (images/Dockerfile); --model_version says which registered
        # version /mnt/models holds, for metadata, answers and metrics (the folder itself does not say).
        "args": [
            f"--model_name={served.name}",
            f"--model_dir={MODEL_DIR}",
            f"--http_port={HTTP_PORT}",
            f"--model_version={served.version}",
        ],
        "env": [
            {"name": "STORAGE_URI", "value": served.storage_uri},
            {"name": "PROTOCOL", "value": "v2"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"containerPort": HTTP_PORT, "name": "http", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": probe_path, "port": HTTP_PORT},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 15,
            "failureThreshold": 4,
        },
        "resources": {
            "requests": {"cpu": cpu[0], "memory": memory[0]},
            "limits": {"cpu": cpu[1], "memory": memory[1]},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "predictor": {
                "serviceAccountName": service_account,
                "minReplicas": 1,
                "maxReplicas": 1,
                "securityContext": {
                    "runAsNonRoot": True,
                    "fsGroup": USER_ID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            }
        },
    }


def to_yaml(manifest: dict[str, Any], warning: str = "") -> str:
    """The manifest as YAML; a ``warning`` goes on top as comments, where ``kubectl`` ignores it."""
    header = "".join(f"# {line}\n" for line in textwrap.wrap(f"WARNING: {warning}", 110)) if warning else ""
    return header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def write_manifest(manifest: dict[str, Any], output: str | Path, warning: str = "") -> Path:
    """Write ``manifest`` as YAML: to ``output`` if it is a file name, or into the folder ``output`` as
    ``inferenceservice-<name>.yaml``. Atomic, like every write in radpipe."""
    path = Path(output)
    if path.is_dir() or str(output).endswith("/"):
        path = path / f"inferenceservice-{manifest['metadata']['name']}.yaml"
    storage.atomic_write_text(path, to_yaml(manifest, warning))
    return path


def write_serving_manifest(
    output: str | Path, model_name: str, version: str, alias: str = "", artifacts_destination: str = ""
) -> Path:
    """For evaluate-and-register: write the InferenceService of the version it just registered to
    ``output`` (the KFP artifact's path), using the MLflow client's current tracking URI.

    From a local run's store the files are on this machine: the manifest is written all the same, with
    the warning on top (as ``radpipe deploy`` prints it), and the warning is logged.
    """
    version, download_uri = lookup(ModelRef(name=model_name, version=str(version)))
    storage_uri, warning = locate(version_uri(model_name, version), download_uri, artifacts_destination)
    served = ServedVersion(model_name, version, storage_uri, alias, warning)
    path = write_manifest(render_inference_service(served), output, warning)
    if warning:
        logger.info(f"serving manifest: {warning}")
    logger.info(f"serving manifest: InferenceService for models:/{model_name}/{version} serving {served.storage_uri}")
    return path
