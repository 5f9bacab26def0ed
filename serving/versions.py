"""Which registered version is served: resolved from the model URI, or told by ``--model_version``.

``models:/NAME@ALIAS`` is resolved to its version number *before* loading, and that number is what is
loaded (``models:/NAME/N``): an alias moved while the server starts cannot make it report one version and
serve another. A folder (KServe's ``/mnt/models``, which the storage initializer fills from the
version's ``storageUri``) does not say which version it is; ``radpipe deploy`` passes
``--model_version`` in the InferenceService's arguments. Anything else is served with an unknown version
(metadata ``versions: []``), and the server's log says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from radpipe.errors import RadpipeError
from radpipe.model_uri import ModelUri, is_model_uri, version_uri


@dataclass(frozen=True)
class ResolvedModel:
    """What to load, and the registered version it is (``None`` when nothing says)."""

    load_uri: str
    version: str | None


def _registry_version(name: str, reference: str) -> str:
    """The version number behind ``models:/NAME@ALIAS`` (``reference`` = ``@ALIAS``) or ``models:/NAME/latest``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if reference.startswith("@"):
            return str(client.get_model_version_by_alias(name, reference[1:]).version)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise RadpipeError(
            f"cannot resolve models:/{name}{reference} in the MLflow registry at {mlflow.get_tracking_uri()}: "
            f"{exc.message}; check the name and alias, and MLFLOW_TRACKING_URI"
        ) from None
    if not versions:
        raise RadpipeError(f"models:/{name}/latest: the registered model '{name}' has no versions")
    return str(max(int(v.version) for v in versions))


def resolve(model_uri: str, given: str | None = None) -> ResolvedModel:
    """The URI to load and the version it is; ``given`` is ``--model_version`` and must agree with the URI."""
    version: str | None = None
    load_uri = model_uri
    if is_model_uri(model_uri):
        parts = ModelUri.parse(model_uri)
        if parts.alias is not None and parts.version is None:
            version = _registry_version(parts.name, f"@{parts.alias}")
            load_uri = version_uri(parts.name, version)
        elif parts.version is not None and parts.version.isdigit():
            version = str(int(parts.version))
        elif parts.version == "latest":
            version = _registry_version(parts.name, "/latest")
            load_uri = version_uri(parts.name, version)
    if given is not None and version is not None and given != version:
        raise RadpipeError(
            f"--model_version {given} contradicts {model_uri}, which is version {version}; drop --model_version "
            "(a models:/ URI says its version) or serve the version it names"
        )
    return ResolvedModel(load_uri, version if version is not None else given)
