"""User-facing errors.

Every error a user can fix by changing their input is a :class:`RadpipeError` whose message names the
problem *and* what to do about it. The CLI prints these without a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class RadpipeError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(RadpipeError):
    """The configuration (YAML file or ``--set`` override) is invalid."""


class DataError(RadpipeError):
    """The input data set cannot be used (no images, one class, an empty class, ...)."""


class StorageError(RadpipeError):
    """A file, S3 or HTTP URI cannot be read or written."""


class WeightsError(RadpipeError):
    """Requested pretrained weights cannot be had; we never silently fall back to random weights."""


class ModelLoadError(RadpipeError):
    """A model URI does not resolve to a radpipe model."""


class RegistryError(RadpipeError):
    """A model registry operation cannot be done as asked (unknown version, nothing to roll back to, ...)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    swallows it on the way out, while every ``with`` and ``finally`` still cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def raise_on_termination() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated` in this process (main thread only: elsewhere a no-op)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


ERROR_FILE_ENV = "RADPIPE_ERROR_FILE"
RUNS_FILE_ENV = "RADPIPE_RUNS_FILE"
"""Where a task appends the id of each MLflow run it opens, so that ``radpipe run`` can mark the ones left
RUNNING as FAILED when the pipeline fails or is stopped."""


class stage_errors:
    """Turn a :class:`RadpipeError` inside a pipeline task into a clean message and a non-zero exit.

    A task's log then ends with ``radpipe: train failed: <what to do>`` rather than a traceback, and when
    ``RADPIPE_ERROR_FILE`` is set (``radpipe run`` sets it) the message is also written there, so the CLI
    can repeat it after kfp.local's own failure report. A module the stage imports and its image lacks is
    named the same way (with its traceback, as it is a packaging bug): in a local container run, not on
    the cluster, is where that should surface.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __enter__(self) -> None:
        # A task stopped by SIGTERM unwinds like an error: temporary folders go, MLflow runs end FAILED.
        raise_on_termination()
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        import os
        import sys

        if isinstance(exc, ImportError):
            import traceback

            traceback.print_exception(exc)
            message = (
                f"{self.stage} failed: this environment lacks a module the stage imports ({type(exc).__name__}: "
                f"{exc}); in a container, add it to images/{self.stage}/requirements.txt, run `make image-locks` "
                "and rebuild the image (make images)"
            )
        elif isinstance(exc, RadpipeError):
            message = f"{self.stage} failed: {exc}"
        elif isinstance(exc, Terminated):
            sys.stderr.write(f"radpipe: {self.stage} {exc}; cleaned up\n")
            sys.stderr.flush()
            raise SystemExit(128 + exc.signum)
        else:
            return False
        sys.stderr.write(f"radpipe: {message}\n")
        sys.stderr.flush()
        path = os.environ.get(ERROR_FILE_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(message + "\n")
        raise SystemExit(2)
