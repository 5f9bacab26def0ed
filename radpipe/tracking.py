"""MLflow tracking set-up shared by the stages and the CLI.

The tracking URI follows MLflow's convention (``MLFLOW_TRACKING_URI``). Only the CLI's local runs fall
back to the embedded store, a sqlite database under ``.radpipe/`` in the working directory: inside a
pipeline task an unset URI is an error, because a store written inside a pod vanishes with the pod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from radpipe.errors import RUNS_FILE_ENV, RadpipeError

logger = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------ failing fast and clean

RETRY_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def retry_env(budget_seconds: float) -> dict[str, str]:
    """MLflow's HTTP retry settings that keep one call within ``budget_seconds``.

    MLflow's defaults (7 retries, backoff factor 2, 120 s per request) let one call retry for about 4 minutes;
    three calls in a row made a dead server surface after 12 minutes. urllib3 sleeps ``factor * 2**(n-1)``
    before retry n (none before the first), so with factor 1 and r retries the sleeps add up to 2**r - 2
    seconds: r is the most that fits half the budget, and each request's timeout shares the other half.
    """
    retries = 0
    while 2 ** (retries + 1) - 2 <= budget_seconds / 2 and retries < 7:
        retries += 1
    timeout = max(2, int(budget_seconds / 2 / (retries + 1)))
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
    }


@contextlib.contextmanager
def quick_requests(timeout_seconds: int = 5) -> Iterator[None]:
    """One attempt per MLflow call, ``timeout_seconds`` each, while it lasts: for calls made from an error
    handler (mark a version or a run failed), which must not spend another retry budget on a dead server."""
    saved = {key: os.environ.get(key) for key in RETRY_ENV}
    os.environ.update(
        {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_seconds),
        }
    )
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def preflight(tracking_uri: str, timeout_seconds: float = 10.0) -> None:
    """Check that an MLflow server answers before any stage runs; a clear error in seconds otherwise.

    Only ``http(s)://`` URIs are checked (``/health``, then the experiments API, which also catches a
    wrong path or an authenticating proxy); a ``sqlite:`` store is a local file the run creates.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    base = tracking_uri.rstrip("/")
    deadline = time.monotonic() + timeout_seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
                with urllib.request.urlopen(base + path, timeout=max(1.0, deadline - time.monotonic())):
                    pass
            return
        except urllib.error.HTTPError as exc:
            raise RadpipeError(
                f"MLflow at {tracking_uri} answered {exc.code} {exc.reason} to {exc.url}; check MLFLOW_TRACKING_URI "
                "(or tracking.uri) names an MLflow server and that its credentials are set. Nothing ran"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.5)
    reason = getattr(last, "reason", last)
    raise RadpipeError(
        f"cannot reach MLflow at {tracking_uri} ({reason}, for {timeout_seconds:g} s); start the tracking server "
        "or fix MLFLOW_TRACKING_URI (or tracking.uri; unset both for the local store under .radpipe/). Nothing ran"
    )


def record_run(run_id: str) -> None:
    """Note an MLflow run this task opened in ``$RADPIPE_RUNS_FILE`` (set by ``radpipe run``), so that a run
    left RUNNING by a failed or stopped pipeline is marked FAILED (:func:`fail_open_runs`)."""
    path = os.environ.get(RUNS_FILE_ENV)
    if path and run_id:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(run_id + "\n")


def fail_open_runs(tracking_uri: str, runs_file: Path) -> list[str]:
    """Mark the runs listed in ``runs_file`` that are still RUNNING as FAILED; return their ids.

    Best effort with one quick attempt per call: the tracking server may be the thing that failed."""
    from mlflow import MlflowClient

    if not runs_file.is_file():
        return []
    ids = list(dict.fromkeys(line.strip() for line in runs_file.read_text().splitlines() if line.strip()))
    failed = []
    with quick_requests():
        client = MlflowClient(tracking_uri)
        for run_id in ids:
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, status="FAILED")
                    failed.append(run_id)
            except Exception as exc:  # reported; the pipeline's own error is the one to raise
                logger.warning(f"could not mark MLflow run {run_id} as failed ({exc})")
                break
    return failed
