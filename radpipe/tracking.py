"""MLflow tracking set-up shared by the stages and the CLI.

The tracking URI follows MLflow's convention (``MLFLOW_TRACKING_URI``). Only the CLI's local runs fall
back to the embedded store, a sqlite database under ``.radpipe/`` in the working directory: inside a
pipeline task an unset URI is an error, because a store written inside a pod vanishes with the pod.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from radpipe.errors import RadpipeError

EMBEDDED_DIR = ".radpipe"


def embedded_tracking_uri(workdir: str | Path | None = None) -> str:
    """``sqlite:///<abs>/.radpipe/mlflow.db``: the default store of local runs."""
    root = (Path(workdir) if workdir else Path.cwd()).resolve() / EMBEDDED_DIR
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(configured: str = "", *, allow_embedded: bool = False) -> str:
    """The configured URI, else ``MLFLOW_TRACKING_URI``, else (CLI only) the embedded sqlite store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    if allow_embedded:
        return embedded_tracking_uri()
    raise RadpipeError(
        "no MLflow tracking server configured: set MLFLOW_TRACKING_URI in the task's environment "
        "(e.g. http://mlflow.radpipe.svc:5000) or the 'tracking.uri' config key"
    )


def _sqlite_artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts live beside the database (MLflow's default is ./mlruns in the cwd)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(uri[len("sqlite:///") :])
    return (db_path.parent / "mlartifacts").resolve().as_uri()


def setup_experiment(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` and return the id of ``experiment``, creating it if needed."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        existing = client.get_experiment_by_name(experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(experiment, artifact_location=_sqlite_artifact_root(tracking_uri))
        except MlflowException as exc:  # created concurrently by a parallel task
            existing = client.get_experiment_by_name(experiment)
            if existing is None:
                raise exc
            return existing.experiment_id
    except MlflowException as exc:
        raise RadpipeError(f"MLflow at {tracking_uri} refused the request: {exc.message}") from exc
    except OSError as exc:
        raise RadpipeError(
            f"cannot reach MLflow at {tracking_uri}: {exc}; start the tracking server or fix MLFLOW_TRACKING_URI"
        ) from exc


def flatten(prefix: str, value: object) -> dict[str, object]:
    """``{'train': {'epochs': 5}}`` -> ``{'train.epochs': 5}``: config sections as MLflow params."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    return {prefix: value}


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person looks at a run: the server's UI, or the command that opens the embedded store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} in experiment {experiment_id} (mlflow ui --backend-store-uri {tracking_uri})"
