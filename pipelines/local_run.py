"""Run the pipeline on this machine through ``kfp.local.SubprocessRunner``.

Every task runs as a subprocess of this Python (``use_venv=False``): no per-task virtualenv, no
TensorFlow reinstall. The same compiled components run on a cluster in their stage images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from radpipe import storage, tracking
from radpipe.config import Config
from radpipe.errors import ERROR_FILE_ENV, RUNS_FILE_ENV, RadpipeError
from radpipe.pipelines import run_display
from radpipe.pipelines.tasks import task_processes
from radpipe.pipelines.training_pipeline import DEFAULT_IMAGE_TAG, build_pipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRunResult:
    model_uri: str
    model_version: str
    gate: str
    candidate: str
    test_accuracy: float
    test_macro_f1: float
    tracking_uri: str
    pipeline_root: str
    seconds: float
    task_seconds: list[tuple[str, float]] = field(default_factory=list)
    """Wall time of each task, in the order they finished (a task per candidate inside the loop)."""
    runner: str = "subprocess"
    log_path: str = ""
    """Every line every task printed, and kfp.local's own records (``.radpipe/logs/run-*.log``)."""


def _absolute_if_local(uri: str) -> str:
    """Tasks may run with another working directory: local paths become absolute."""
    if uri and uri not in ("imagenet", "none") and storage.scheme(uri) == "file":
        return str(storage.local_path(uri).resolve())
    return uri


def localize(config: Config, workdir: Path) -> Config:
    """The config as a local run needs it: absolute local paths, a resolved tracking URI."""
    data = config.data.replace(uri=_absolute_if_local(config.data.uri))
    if isinstance(config.data.class_map, str):
        data = data.replace(class_map=_absolute_if_local(config.data.class_map))
    model = config.model.replace(weights=_absolute_if_local(config.model.weights))
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or tracking.embedded_tracking_uri(workdir)
    cache = _absolute_if_local(config.train.feature_cache) or str(tracking.home(workdir) / "cache")
    train = config.train.replace(feature_cache=cache)
    return config.replace(data=data, model=model, train=train, tracking=config.tracking.replace(uri=uri))


RUNNERS = ("subprocess", "docker")


def attach_log(tracking_uri: str, experiment: str, started_ms: int, log_file: Path) -> None:
    """Log the run's log file to the pipeline's MLflow run (``logs/``), also when a task failed.

    That run is the one ingest opened (``radpipe.role=pipeline``) after this run started; where none or
    several match (a run that failed before ingest logged, runs side by side on one store), the file
    stays where the summary says and nothing is guessed. One quick try: after a failure the server may
    be what failed, and the run's own error matters more than this file.
    """
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri)
        with tracking.quick_requests():
            found = client.get_experiment_by_name(experiment)
            filter_string = f"tags.`radpipe.role` = 'pipeline' and attributes.start_time >= {started_ms}"
            runs = client.search_runs([found.experiment_id], filter_string, max_results=2) if found else []
            if len(runs) == 1:
                client.log_artifact(runs[0].info.run_id, str(log_file), "logs")
            else:
                logger.info(f"{len(runs)} pipeline runs in MLflow since this run started: {log_file} not attached")
    except Exception as exc:  # the log stays on disk; a failed upload must not hide the run's outcome
        logger.warning(f"could not log {log_file} to MLflow: {exc}")


def run_local(
    config: Config,
    workdir: str | Path | None = None,
    runner: str = "subprocess",
    image_registry: str = "",
    image_tag: str = DEFAULT_IMAGE_TAG,
    log_level: int = logging.WARNING,
) -> LocalRunResult:
    """Run the whole pipeline on this machine and return what it registered.

    Args:
        config: the run's configuration (validated).
        workdir: where ``.radpipe/`` (embedded store, pipeline root, feature cache) lives; default the cwd.
        runner: ``subprocess`` (every task a subprocess of this Python) or ``docker`` (every task in its
            stage's image, ``pipelines/docker_runner.py``).
        image_registry: prefix of the stage images (docker runner).
        image_tag: tag of the stage images (docker runner).
        log_level: what reaches the terminal besides a bar per stage: WARNING (warnings and errors),
            INFO (the tasks' log records too) or DEBUG (every line). The log file always has everything.

    Raises:
        RadpipeError: a task failed; the message is its one-line reason and names the log file.
    """
    from kfp import local

    if runner not in RUNNERS:
        raise RadpipeError(f"unknown runner {runner!r}; use one of: {', '.join(RUNNERS)}")
    # Expected locally, and said once here rather than once per task: stage images are not Python images
    # by name, and cluster resource requests do not apply to subprocesses.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    workdir = Path(workdir or Path.cwd()).resolve()
    if not config.data.uri:
        raise RadpipeError("no data given: pass --data PATH_OR_URI or set data.uri in the config")
    config = localize(config, workdir)
    for uri in (config.data.uri, config.model.weights):
        if uri not in ("imagenet", "none") and storage.scheme(uri) == "file" and not Path(uri).exists():
            raise RadpipeError(f"{uri} does not exist; check the path")
    store_uri = config.tracking.uri  # the docker runner serves it over HTTP to the tasks, for the run only
    started = time.monotonic()
    # Before any stage: an unreachable server is an error in seconds, not after ingest and minutes of retries.
    tracking.preflight(store_uri)
    pipeline_root = tracking.home(workdir) / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # Where a failing task writes its one-line reason, and every task the MLflow runs it opens: inside the
    # pipeline root, which containers see too.
    stamp = f"{os.getpid()}-{time.time_ns()}"
    error_file = pipeline_root / f".error-{stamp}.txt"
    runs_file = pipeline_root / f".runs-{stamp}.txt"
    error_file.touch()
    runs_file.touch()
    task_env = {
        ERROR_FILE_ENV: str(error_file),
        RUNS_FILE_ENV: str(runs_file),
        **tracking.retry_env(config.tracking.retry_budget_seconds),
    }
    previous = {key: os.environ.get(key) for key in task_env}
    os.environ.update(task_env)
    log_file = run_display.log_path(tracking.home(workdir))
    started_ms = int(time.time() * 1000)
    try:
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(open(log_file, "w", encoding="utf-8"))
            display = stack.enter_context(run_display.RunDisplay(log, sys.stderr, log_level))
            stack.enter_context(run_display.RootRecords(display))
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(run_display.LineWriter(display))))
            stack.enter_context(task_processes())
            if runner == "docker":
                from radpipe.pipelines.docker_runner import docker_runner

                kfp_runner, config = stack.enter_context(
                    docker_runner(config, workdir, pipeline_root, error_file, image_registry, image_tag)
                )
            else:
                kfp_runner = local.SubprocessRunner(use_venv=False)
            local.init(runner=kfp_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
            pipeline = build_pipeline(config, image_registry=image_registry, image_tag=image_tag)
            try:
                task = pipeline(**config.pipeline_arguments())
            except Exception as exc:
                # Not only RuntimeError: kfp's DockerRunner counts a container that exits (and is auto-removed)
                # before it waits on it as succeeded, and the failure then surfaces in the next task as a
                # missing output (a ValueError). The failed task's message in the error file is the real one.
                message = error_file.read_text().strip() or f"the pipeline failed ({run_display.plain(str(exc))})"
                raise RadpipeError(f"{message}\n  full log: {log_file}") from exc
    except BaseException:
        # Failed or stopped (SIGTERM, Ctrl-C): the tasks are gone by now; no MLflow run stays RUNNING.
        failed = tracking.fail_open_runs(store_uri, runs_file)
        if failed:
            logger.warning(f"marked the MLflow runs left RUNNING as FAILED: {', '.join(failed)}")
        raise
    finally:
        attach_log(store_uri, config.tracking.experiment, started_ms, log_file)
        error_file.unlink(missing_ok=True)
        runs_file.unlink(missing_ok=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    out = task.outputs
    return LocalRunResult(
        model_uri=out["model_uri"],
        model_version=str(out["model_version"]),
        gate=str(out["gate"]),
        candidate=out["candidate"],
        test_accuracy=float(out["test_accuracy"]),
        test_macro_f1=float(out["test_macro_f1"]),
        tracking_uri=store_uri,
        pipeline_root=str(pipeline_root),
        seconds=time.monotonic() - started,
        task_seconds=display.finished,
        runner=runner,
        log_path=str(log_file),
    )
