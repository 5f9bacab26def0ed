"""What ``radpipe run --runner docker`` adds to a local run: each task in its stage's own image.

``kfp.local.DockerRunner`` runs the same compiled components as the subprocess runner, in the images that
``make images`` built (the ones a cluster pulls). The containers see this machine the way a cluster's pods
see theirs:

- **network**: the host's (``network_mode=host``), so an MLflow or S3 endpoint on loopback — the run's
  own MLflow server, a MinIO, a test's S3 server — is reached at the same URL inside and out;
- **MLflow**: a real server. Without ``MLFLOW_TRACKING_URI`` the run serves the embedded store
  (``.radpipe/mlflow.db``) with ``mlflow server`` for its duration, so versions land where the subprocess
  runner puts them and ``radpipe models`` / ``predict`` work the same afterwards;
- **files**: the pipeline root (kfp.local's own mount), and, at the same absolute paths, the local inputs
  the config names (data, weights, class map; read-only), the feature cache and the embedded store's
  artifact folder (read-write); the host's Keras weights cache read-only at ``$KERAS_HOME/models``;
- **environment**: ``AWS_*``, ``MLFLOW_*`` and ``RADPIPE_*`` of this process, and proxies;
- **user**: yours (files written into your folders stay yours); as root, the images' own user 10001, as
  on a cluster, with the folders the tasks write handed to it.

Before anything runs, every stage image must exist, and an image built from other sources than this
checkout's is refused with the command that rebuilds it: a stale image would run yesterday's code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radpipe import storage, tracking
from radpipe.components.prepare_base.backbones import keras_cache_dir
from radpipe.config import Config
from radpipe.errors import ERROR_FILE_ENV, RadpipeError
from radpipe.images import SOURCE_DIGEST_LABEL, STAGE_IMAGES, USER_ID, image_ref, source_digest
from radpipe.mlflow_server import MlflowServer

FORWARDED_PREFIXES = ("AWS_", "MLFLOW_", "RADPIPE_")
FORWARDED_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
CONTAINER_KERAS_HOME = "/opt/keras"
REBUILD_HINT = (
    "build them with `make images` (air-gapped: `make base-image images BASE_IMAGE=radpipe-base:bookworm-py3.11`)"
)


@dataclass
class ContainerSetup:
    """Mounts, environment and user of every task's container."""

    read_only: set[Path] = field(default_factory=set)
    writable: set[Path] = field(default_factory=set)
    mounted_by_kfp: set[Path] = field(default_factory=set)
    """Writable, but kfp.local mounts them itself (the pipeline root): no second mount."""
    environment: dict[str, str] = field(default_factory=dict)
    user: str = ""
    keras_cache: Path | None = None

    def runner_args(self) -> dict[str, Any]:
        """Keyword arguments of ``kfp.local.DockerRunner`` (``docker`` SDK ``containers.run`` arguments)."""
        from docker.types import Mount

        mounts = [Mount(str(p), str(p), type="bind", read_only=True) for p in sorted(self.read_only - self.writable)]
        mounts += [Mount(str(p), str(p), type="bind") for p in sorted(self.writable - self.mounted_by_kfp)]
        if self.keras_cache is not None:
            mounts.append(Mount(f"{CONTAINER_KERAS_HOME}/models", str(self.keras_cache), type="bind", read_only=True))
        return {
            "network_mode": "host",
            "user": self.user,
            "environment": dict(self.environment),
            "mounts": mounts,
            "use_config_proxy": False,
        }


def _local_path(uri: str) -> Path | None:
    if not uri or uri in ("imagenet", "none") or storage.scheme(uri) != "file":
        return None
    return storage.local_path(uri).resolve()


def local_inputs(config: Config) -> set[Path]:
    """The local files and folders a run reads: data, class map, weights (of the base and every candidate)."""
    uris = [config.data.uri, config.model.weights]
    if isinstance(config.data.class_map, str):
        uris.append(config.data.class_map)
    uris += [str(c.model.get("weights", "")) for c in config.search.candidates]
    return {p for p in map(_local_path, uris) if p is not None}


def forwarded_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ if environ is None else environ)
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES}


def container_setup(
    config: Config, tracking_uri: str, writable: list[Path], keras_cache: Path | None
) -> ContainerSetup:
    """The containers' view of this run (see the module's docstring)."""
    setup = ContainerSetup(read_only=local_inputs(config), keras_cache=keras_cache)
    cache = _local_path(config.train.feature_cache)
    setup.writable = {p.resolve() for p in writable} | ({cache} if cache else set())
    env = forwarded_environment()
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    if keras_cache is not None:
        env["KERAS_HOME"] = CONTAINER_KERAS_HOME
    if os.getuid() == 0:
        setup.user = f"{USER_ID}:{USER_ID}"
    else:
        setup.user = f"{os.getuid()}:{os.getgid()}"
        env["HOME"] = "/tmp"  # the image's home belongs to 10001
    setup.environment = env
    return setup


def prepare_writable(paths: list[Path], user: str) -> None:
    """Create the folders tasks write to; as root, hand them (and what is directly in them: the error file,
    the store's experiment folders) to the containers' user, 10001. Deeper content is left alone: tasks
    only add to these folders."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    if os.getuid() != 0 or not user.startswith(f"{USER_ID}:"):
        return
    for path in paths:
        os.chown(path, USER_ID, USER_ID)
        for child in path.iterdir():
            os.chown(child, USER_ID, USER_ID, follow_symlinks=False)


def docker_client() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise RadpipeError("--runner docker needs the Python package 'docker': pip install 'radpipe[docker]'") from exc
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # docker.errors.DockerException and socket errors alike
        raise RadpipeError(
            f"--runner docker needs a running Docker daemon, and none answers ({exc}); start Docker "
            "(dockerd, or the docker service), or run without --runner docker"
        ) from exc
    return client


def check_images(client: Any, refs: dict[str, str], repo: Path | None) -> None:
    """Every image of ``refs`` (image folder -> reference) is on this Docker host and, when radpipe runs
    from a source checkout (``repo``), was built from its sources (the label ``make images`` sets)."""
    import docker

    missing, stale = [], []
    for image, ref in refs.items():
        try:
            labels = client.images.get(ref).labels or {}
        except docker.errors.ImageNotFound:
            missing.append(ref)
            continue
        built_from = labels.get(SOURCE_DIGEST_LABEL, "")
        if repo is not None and built_from not in ("", "unknown") and built_from != source_digest(repo, image):
            stale.append(ref)
    if missing:
        raise RadpipeError(f"images not on this Docker host: {', '.join(missing)}; {REBUILD_HINT}")
    if stale and not os.environ.get("RADPIPE_ALLOW_STALE_IMAGES"):
        raise RadpipeError(
            f"images built from other sources than this checkout: {', '.join(stale)}; rebuild them "
            "(`make images`), or set RADPIPE_ALLOW_STALE_IMAGES=1 to run them anyway"
        )


def source_checkout() -> Path | None:
    """The repository radpipe runs from, if it runs from a source checkout (an editable install)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "images").is_dir() else None


@contextlib.contextmanager
def docker_runner(
    config: Config, workdir: Path, pipeline_root: Path, error_file: Path, registry: str, tag: str
) -> Iterator[tuple[Any, Config]]:
    """A ``kfp.local.DockerRunner`` for this run and the config as its tasks see it (the MLflow server's
    URL as ``tracking.uri``); the run's MLflow server, if it needed one, stops when the block ends."""
    from kfp import local

    client = docker_client()
    try:
        refs = {stage: image_ref(image, registry, tag) for stage, image in STAGE_IMAGES.items()}
        check_images(client, refs, source_checkout())
    finally:
        client.close()
    uri = config.tracking.uri
    writable = [pipeline_root]  # the error file is in it
    with contextlib.ExitStack() as stack:
        if not uri.startswith(("http://", "https://")):
            artifact_root = tracking.sqlite_artifact_root(uri)
            if artifact_root is None:
                raise RadpipeError(
                    f"--runner docker needs an MLflow server (http://...) or the embedded sqlite store, not {uri}; "
                    "set MLFLOW_TRACKING_URI to a server, or unset it to use the embedded store"
                )
            writable.append(storage.local_path(artifact_root))
            server = MlflowServer.for_store(uri, artifact_root, tracking.home(workdir) / "mlflow-server")
            stack.enter_context(server)
            uri = server.url
        keras_cache = keras_cache_dir()
        setup = container_setup(config, uri, writable, keras_cache if keras_cache.is_dir() else None)
        setup.environment[ERROR_FILE_ENV] = str(error_file)
        setup.mounted_by_kfp = {pipeline_root.resolve()}
        prepare_writable(sorted(setup.writable), setup.user)
        yield local.DockerRunner(**setup.runner_args()), config.replace(tracking=config.tracking.replace(uri=uri))
