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
HOME_ENV = "RADPIPE_HOME"
"""The folder of local runs (embedded store, pipeline root, feature cache), instead of ``./.radpipe``."""
STORE_FILE = "mlflow.db"


def home(workdir: str | Path | None = None) -> Path:
    """Where local runs keep their state: ``$RADPIPE_HOME``, else ``<workdir>/.radpipe`` (workdir: the cwd)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    return (Path(workdir) if workdir else Path.cwd()).resolve() / EMBEDDED_DIR


def embedded_tracking_uri(workdir: str | Path | None = None) -> str:
    """``sqlite:///<home>/mlflow.db``: the store ``radpipe run`` creates and writes (see :func:`home`)."""
    root = home(workdir)
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / STORE_FILE}"


def find_embedded_store(start: str | Path | None = None) -> Path | None:
    """The store a command that only reads should use: ``$RADPIPE_HOME/mlflow.db``, else the nearest
    ``.radpipe/mlflow.db`` in the working directory or above it (as git finds ``.git``). Never created."""
    if os.environ.get(HOME_ENV):
        db = home() / STORE_FILE
        return db if db.is_file() else None
    here = (Path(start) if start else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        db = folder / EMBEDDED_DIR / STORE_FILE
        if db.is_file():
            return db
    return None


def resolve_tracking_uri(configured: str = "", *, allow_embedded: bool = False) -> str:
    """The configured URI, else ``MLFLOW_TRACKING_URI``, else (CLI only) the embedded store of local runs,
    found where :func:`find_embedded_store` looks; the error says where it looked."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    if allow_embedded:
        db = find_embedded_store()
        if db is not None:
            return f"sqlite:///{db}"
        where = f"${HOME_ENV} ({home()})" if os.environ.get(HOME_ENV) else f"{Path.cwd()} or any folder above it"
        raise RadpipeError(
            f"no MLflow registry found: MLFLOW_TRACKING_URI is not set and there is no {EMBEDDED_DIR}/{STORE_FILE} "
            f"in {where}. Run this where you ran `radpipe run` (or below it), set {HOME_ENV} to that "
            f"{EMBEDDED_DIR} folder, or set MLFLOW_TRACKING_URI to your MLflow server"
        )
    raise RadpipeError(
        "no MLflow tracking server configured: set MLFLOW_TRACKING_URI in the task's environment "
        "(e.g. http://mlflow.radpipe.svc:5000) or the 'tracking.uri' config key"
    )


def sqlite_artifact_root(uri: str) -> str | None:
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
            return client.create_experiment(experiment, artifact_location=sqlite_artifact_root(tracking_uri))
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
