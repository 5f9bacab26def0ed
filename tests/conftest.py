"""Shared fixtures: generated image trees, a real MLflow server, a real S3 server (moto), ../shared."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radpipe.mlflow_server import MlflowServer, free_port, wait_for_http

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RADPIPE_SHARED", REPO.parent / "shared"))
SAMPLE = REPO / "examples" / "chest-ct-sample"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
CHEST_CT = SHARED / "data" / "chest-ct"


def write_image(
    path: Path, value: int, size: int = 24, mode: str = "RGB", seed: int = 0, fmt: str | None = None
) -> Path:
    """A small noisy image whose mean brightness is ``value`` (so classes are learnable by brightness)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


AS_EXPORTED = "none"
"""``model.intensity`` for a model that must learn :func:`make_tree`'s classes: they differ in brightness alone
(:func:`write_image`), the cue the default's per-image grey-level stretch (``autocontrast``) removes by design."""


def make_tree(root: Path, layout: dict[str, int], value_of=None, seed: int = 0) -> Path:
    """``{"train/cats": 6, "test/dogs": 2}`` -> that many distinct PNGs per folder."""
    value_of = value_of or (lambda folder: 60 if "cat" in folder else 190)
    n = seed
    for folder, count in layout.items():
        for i in range(count):
            n += 1
            write_image(root / folder / f"img{i}.png", value_of(folder), seed=n)
    return root


@pytest.fixture
def two_class_tree(tmp_path: Path) -> Path:
    """A split-less data set: two classes, 14 images each."""
    return make_tree(tmp_path / "data", {"cats": 14, "dogs": 14})


@pytest.fixture(scope="session")
def ingested_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ingested two-class data set (train/val/test), shared by stage tests."""
    from radpipe.components.ingest.ingest import ingest
    from radpipe.config import DataConfig

    root = tmp_path_factory.mktemp("tiny")
    make_tree(root / "src", {"cats": 16, "dogs": 16})
    ingest(DataConfig(uri=str(root / "src")), root / "dataset", root / "work")
    return root / "dataset"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` process on loopback, sqlite backend, local artifact root."""
    with MlflowServer(tmp_path) as server:
        yield server.url


@pytest.fixture
def use_mlflow(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this process (and its children) at the real MLflow server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-protocol server (moto) on loopback; the AWS env vars point boto3 and MLflow at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "radpipe-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "radpipe-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield endpoint
    finally:
        server.stop()


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.exists(),
        reason=f"{path} is missing: this test needs the ../shared fixtures (real chest CT data, weights, "
        "schemas), which CI has and a user's clone does not",
    )


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled chest CT sample."""
    target = tmp_path / "chest-ct-sample"
    shutil.copytree(SAMPLE, target)
    return target


# ------------------------------------------------------------------------------------------ serving

SAMPLE_CLASSES = ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px radpipe model folder for the chest CT sample's classes, whose answers differ between images.

    A random backbone (``weights: none``) in inference mode yields features of very different sizes (~1e-12
    at its last layer, larger at the intermediate one); the head's kernel is divided by each feature's spread
    over the sample's images (as the logistic head folds in its standardisation), so that the differences
    between images reach the probabilities: answers then depend on the image, which the tests comparing
    served answers with ``radpipe predict`` need.
    """
    import keras

    from radpipe.components.prepare_base.prepare_base import prepare_base
    from radpipe.config import ModelConfig
    from radpipe.modelspec import load_model_dir, save_model_dir
    from radpipe.preprocessing import to_model_input

    root = tmp_path_factory.mktemp("served-model")
    prepare_base(ModelConfig(weights="none", image_size=32, scales=[1.0]), SAMPLE_CLASSES, root / "base", root)
    model, spec = load_model_dir(root / "base")
    images = np.stack([to_model_input(p, spec.preprocessing) for p in sorted(SAMPLE.rglob("*.png"))]).astype("float32")
    features = keras.Model(model.input, model.get_layer("features").output).predict(images, verbose=0)
    spread = features.std(axis=0)
    scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)[:, None]  # constant features: 0
    head = model.get_layer("probabilities")
    kernel, bias = head.get_weights()
    kernel = kernel * scale * 3.0
    head.set_weights([kernel, bias - features.mean(axis=0) @ kernel])
    save_model_dir(model, spec, root / "model")
    return root / "model"


class ServerProcess:
    """A predictor started as its container would start it: ``python -m radpipe.serving``, on loopback."""

    def __init__(
        self, args: list[str], root: Path, env: dict[str, str] | None = None, port_flag: str = "--http_port"
    ) -> None:
        self.port = free_port()
        self.grpc_port: int | None = None
        self.model_dir: Path | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = root / "cwd"  # the server's working directory and TMPDIR: must stay empty
        self.workdir.mkdir(parents=True)
        self.log_path = root / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen(
            [*args, port_flag, str(self.port)],
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(self.workdir), **(env or {})},
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        try:
            wait_for_http(f"{self.url}/v2/health/ready", timeout=timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; server log:\n{self.log()}") from exc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def infer_image(url: str, model_name: str, image: Path, full: bool = False) -> dict:
    """One image file through a server's Open Inference Protocol V2 REST endpoint, as a client sends it
    (``BYTES``, base64): the answer's outputs by name (``full``: the whole answer)."""
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image.read_bytes()).decode()],
            }
        ]
    }
    request = urllib.request.Request(
        f"{url}/v2/models/{model_name}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    return answer if full else {o["name"]: o for o in answer["outputs"]}


@pytest.fixture(scope="session")
def model_server(served_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``served_model_dir`` served as ``chest-ct`` with small limits (1 MiB bodies, 1 MP images, 2 MP per
    request, 8 images), over REST and gRPC (``server.grpc_port``), with the defaults for everything else:
    loopback only, no tokens, repository API off, version unknown."""
    grpc_port = free_port()
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "radpipe.serving",
            "--model_dir",
            str(served_model_dir),
            "--model_name",
            "chest-ct",
            "--grpc_port",
            str(grpc_port),
            "--max_request_bytes",
            str(1 << 20),
            "--max_image_pixels",
            "1000000",
            "--max_request_pixels",
            "2000000",
            "--max_images",
            "8",
        ],
        tmp_path_factory.mktemp("server"),
    )
    server.grpc_port = grpc_port
    server.model_dir = served_model_dir
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def lan_address() -> str:
    """An address of this machine that is not loopback (the route a packet to a private network would take);
    "" where there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    return "" if address.startswith("127.") else address


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


INFERENCE_TOKEN = "inference-token-7f3a9c2e51d84b06"
REPOSITORY_TOKEN = "repository-token-0b1e6d5c4a3f2e19"


@pytest.fixture(scope="session")
def secured_server(served_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``served_model_dir`` served as ``chest-ct`` version 7 on every interface (``--host 0.0.0.0``), REST
    and gRPC, with an inference token and the repository API on behind its own token."""
    root = tmp_path_factory.mktemp("secured")
    (root / "inference.token").write_text(INFERENCE_TOKEN + "\n")
    (root / "repository.token").write_text(REPOSITORY_TOKEN)
    grpc_port = free_port()
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "radpipe.serving",
            "--model_dir",
            str(served_model_dir),
            "--model_name",
            "chest-ct",
            "--model_version",
            "7",
            "--host",
            "0.0.0.0",
            "--grpc_port",
            str(grpc_port),
            "--auth-token-file",
            str(root / "inference.token"),
            "--enable_repository_api",
            "--repository_token_file",
            str(root / "repository.token"),
        ],
        root,
    )
    server.grpc_port = grpc_port
    server.model_dir = served_model_dir
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
