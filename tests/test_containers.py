"""The images for real, with a Docker daemon (``make test-containers`` builds them first):

- both of Docker's builders build an image from ``images/Dockerfile`` with no registry but the base's;
- ``radpipe run --runner docker`` runs every stage in its own image and registers what the subprocess
  runner registers; a stage image lacking a module, or built from other sources, fails here, not on a cluster;
- the cluster path on a laptop: MLflow in the radpipe-mlflow image with artifacts in S3 (moto), data in S3,
  the pipeline in containers, ``radpipe deploy``'s InferenceService fetched with kserve-storage and its
  predictor container started as KServe starts it, answering tritonclient (JSON and binary) with the
  probabilities of ``radpipe predict``.

Without a daemon or without the images every test skips and says why.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from radpipe.images import IMAGES, STAGE_IMAGES, image_ref

from conftest import REPO, SAMPLE, SHARED, free_port, wait_for_http

pytestmark = pytest.mark.containers

DEMO = REPO / "examples" / "demo.yaml"
KSERVE_STORAGE = REPO / ".kserve-storage" / "bin" / "python"
ISVC_CRD = SHARED / "schemas" / "serving.kserve.io_inferenceservices.yaml"
TEST_TAG = "container-test"


def _docker_client():  # type: ignore[no-untyped-def]
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:
        pytest.skip(f"no Docker daemon answers ({exc.__class__.__name__}); make test-containers starts one as root")


@pytest.fixture(scope="module")
def docker_client():  # type: ignore[no-untyped-def]
    client = _docker_client()
    missing = [image_ref(i) for i in IMAGES.values() if not client.images.list(name=image_ref(i))]
    if missing:
        pytest.skip(f"images not built: {', '.join(missing)}; run `make images` (make test-containers does)")
    yield client
    client.close()


def radpipe(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=timeout,
    )


def summary(output: str) -> dict[str, str]:
    """The closing summary of `radpipe run`, by its first word."""
    rows = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key in ("registered", "gate", "aliases", "candidate", "test", "runner", "tracking"):
            rows[key] = value.strip()
    return rows


def probabilities(line: dict) -> list[float]:
    """A `radpipe predict` line's scores, in class order."""
    return [line["scores"][name] for name in sorted(line["scores"])]


# -------------------------------------------------------------------------------------------- builds


def _cli_for(buildkit: bool) -> str | None:
    """A docker CLI that builds with the builder asked for: BuildKit needs buildx on Docker 23+, while Debian's
    20.10 CLI has BuildKit built in."""
    if not buildkit:
        return "docker"
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return "docker"
    for cli in ("/usr/bin/docker", "/usr/local/bin/docker"):
        version = subprocess.run([cli, "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True)
        if Path(cli).exists() and version.stdout[:2] in ("19", "20", "21", "22"):
            return cli
    return None


@pytest.mark.parametrize("buildkit", [False, True], ids=["classic-builder", "buildkit"])
def test_both_builders_build_a_stage_image_that_runs(buildkit: bool, docker_client) -> None:  # type: ignore[no-untyped-def]
    cli = _cli_for(buildkit)
    if cli is None:
        pytest.skip("no docker CLI here builds with BuildKit (no buildx, no Debian 20.10 CLI)")
    tag = f"builder-test-{'buildkit' if buildkit else 'classic'}"
    base = docker_client.images.get(image_ref(STAGE_IMAGES["ingest"])).labels  # the base make images used
    env = {**os.environ, "DOCKER": cli, "DOCKER_BUILDKIT": "1" if buildkit else "0", "IMAGE_TAG": tag}
    if os.environ.get("BASE_IMAGE"):
        env["BASE_IMAGE"] = os.environ["BASE_IMAGE"]
    try:
        built = subprocess.run([str(REPO / "images" / "build.sh"), "ingest"], capture_output=True, text=True, env=env)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        ref = f"radpipe-ingest:{tag}"
        labels = docker_client.images.get(ref).labels
        assert labels["io.radpipe.source-digest"] == base["io.radpipe.source-digest"]
        probe = "import radpipe.components.ingest.stage, kfp, PIL, os; print(os.getuid())"
        out = docker_client.containers.run(ref, ["python3", "-c", probe], remove=True).decode().strip()
        assert out == "10001"
        assert not [i for i in ("tensorflow", "keras") if _importable(docker_client, ref, i)]
    finally:
        subprocess.run(["docker", "rmi", "-f", f"radpipe-ingest:{tag}"], capture_output=True)


def _importable(client, ref: str, module: str) -> bool:  # type: ignore[no-untyped-def]
    probe = f"import importlib.util as u; print(bool(u.find_spec('{module}')))"
    return client.containers.run(ref, ["python3", "-c", probe], remove=True).decode().strip() == "True"


# ------------------------------------------------------------------------------- the docker runner


def test_docker_runner_registers_what_the_subprocess_runner_registers(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"MLFLOW_TRACKING_URI": "", "RADPIPE_HOME": ""}
    runs = {}
    for runner in ("subprocess", "docker"):
        workdir = tmp_path / runner
        workdir.mkdir()
        result = radpipe("run", "--runner", runner, "--config", str(DEMO), "--data", str(SAMPLE), cwd=workdir, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        runs[runner] = summary(result.stdout)
        assert runs[runner]["runner"] == runner
        assert runs[runner]["tracking"] == f"sqlite:///{workdir / '.radpipe' / 'mlflow.db'}"
    docker, local = runs["docker"], runs["subprocess"]
    for key in ("registered", "gate", "aliases", "candidate", "test"):
        assert docker[key] == local[key], (key, docker[key], local[key])
    # Afterwards the docker run's store is an ordinary embedded store: listed, and its model predicts here.
    listed = radpipe("models", "chest-ct-demo", "--json", cwd=tmp_path / "docker", env=env)
    assert listed.returncode == 0, listed.stderr
    (version,) = json.loads(listed.stdout)
    assert sorted(version["aliases"]) == ["challenger", "champion"]
    images = sorted((SAMPLE / "test").rglob("*.png"))[:2]
    predicted = {
        runner: [
            json.loads(line)
            for line in radpipe(
                "predict", "models:/chest-ct-demo@champion", *map(str, images), cwd=tmp_path / runner, env=env
            ).stdout.splitlines()
        ]
        for runner in ("subprocess", "docker")
    }
    for a, b in zip(predicted["subprocess"], predicted["docker"], strict=True):
        assert np.allclose(probabilities(a), probabilities(b), atol=1e-6)


@pytest.fixture
def broken_images(docker_client, tmp_path: Path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Two sets of stage images: ``missing-module`` (the ingest image without Pillow) and ``stale`` (the
    ingest image labelled as built from other sources); the other stages are the real images, re-tagged."""
    tags = {
        "missing-module": "RUN pip uninstall -y -q pillow",
        "stale": "LABEL io.radpipe.source-digest=0123456789abcdef",
    }
    made = []
    for name, instruction in tags.items():
        tag = f"{TEST_TAG}-{name}"
        for stage, image in STAGE_IMAGES.items():
            if stage != "ingest":
                docker_client.images.get(image_ref(image)).tag(image, tag)
                made.append(f"{image}:{tag}")
        context = tmp_path / name
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {image_ref(STAGE_IMAGES['ingest'])}\nUSER 0:0\n{instruction}\nUSER 10001:10001\n"
        )
        docker_client.images.build(path=str(context), tag=f"radpipe-ingest:{tag}", rm=True)
        made.append(f"radpipe-ingest:{tag}")
    try:
        yield {name: f"{TEST_TAG}-{name}" for name in tags}
    finally:
        for ref in made:
            subprocess.run(["docker", "rmi", ref], capture_output=True)


def test_a_broken_or_stale_stage_image_fails_the_local_run_with_what_to_do(
    broken_images: dict[str, str], tmp_path: Path
) -> None:
    env = {"MLFLOW_TRACKING_URI": "", "RADPIPE_HOME": ""}
    run = ["run", "--runner", "docker", "--config", str(DEMO), "--data", str(SAMPLE)]
    missing = radpipe(*run, "--image-tag", broken_images["missing-module"], cwd=tmp_path, env=env)
    assert missing.returncode == 2
    error = next(line for line in missing.stderr.splitlines() if line.startswith("error: "))
    assert error.startswith("error: ingest failed: this environment lacks a module the stage imports")
    assert "full log: " in missing.stderr  # the line after the error names the run's log file
    assert "No module named 'PIL'" in error and "images/ingest/requirements.txt" in error
    assert "Traceback" not in error
    stale = radpipe(*run, "--image-tag", broken_images["stale"], cwd=tmp_path, env=env, timeout=120)
    assert stale.returncode == 2
    assert f"radpipe-ingest:{broken_images['stale']}" in stale.stderr and "make images" in stale.stderr
    assert "built from other sources than this checkout" in stale.stderr
    absent = radpipe(*run, "--image-tag", "never-built", cwd=tmp_path, env=env, timeout=120)
    assert absent.returncode == 2 and "images not on this Docker host: radpipe-ingest:never-built" in absent.stderr


# ------------------------------------------------------------------- the cluster path on a laptop


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "radpipe-test",
        "AWS_SECRET_ACCESS_KEY": "radpipe-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    for bucket in ("mlflow", "radpipe"):
        boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def mlflow_container(docker_client, s3: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The radpipe-mlflow image with manifests/base/mlflow's arguments (artifacts proxied to s3://mlflow/artifacts),
    on the host's network so that it reaches the test's S3 server on loopback."""
    from test_cluster_s3 import manifest_mlflow_args

    port = free_port()
    args = []
    for arg in manifest_mlflow_args():
        if arg.startswith("--backend-store-uri="):
            arg = "--backend-store-uri=sqlite:////tmp/mlflow.db"
        elif arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        args.append(arg)
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    container = docker_client.containers.run(
        image_ref(IMAGES["mlflow"]),
        args,
        environment={**env, "MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        network_mode="host",
        detach=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", timeout=120)
        yield url
    except TimeoutError:
        pytest.fail("the radpipe-mlflow container did not answer:\n" + container.logs(tail=40).decode())
    finally:
        container.remove(force=True)


def test_cluster_path_on_a_laptop_from_s3_data_to_a_served_container(  # type: ignore[no-untyped-def]
    docker_client, mlflow_container: str, s3: str, tmp_path: Path
) -> None:
    if not KSERVE_STORAGE.exists():
        pytest.skip(f"{KSERVE_STORAGE} is missing: make test-containers installs kserve-storage there")
    import tritonclient.http as triton

    from radpipe import local_deploy, storage

    storage.upload(SAMPLE, "s3://radpipe/data/chest-ct-sample")
    env = {"MLFLOW_TRACKING_URI": mlflow_container, "RADPIPE_HOME": ""}
    run = radpipe(
        "run", "--runner", "docker", "--config", str(DEMO), "--data", "s3://radpipe/data/chest-ct-sample",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert summary(run.stdout)["aliases"] == "challenger, champion"

    # The InferenceService for the champion names the version's files in S3, under MLflow's destination.
    deploy = radpipe("deploy", "chest-ct-demo@champion", cwd=tmp_path, env=env, timeout=120)
    assert deploy.returncode == 0, deploy.stderr
    assert "warning" not in deploy.stderr
    manifest = yaml.safe_load(deploy.stdout)
    container = local_deploy.predictor_container(manifest)
    storage_uri = {e["name"]: e["value"] for e in container["env"]}["STORAGE_URI"]
    assert storage_uri.startswith("s3://mlflow/artifacts/")
    if ISVC_CRD.exists():
        from test_manifests import inference_service_validator

        assert not list(inference_service_validator().iter_errors(manifest))

    # KServe's storage initializer: kserve-storage fetches STORAGE_URI with the S3 secret's environment.
    mnt = tmp_path / "mnt-models"
    fetch = subprocess.run(
        [str(KSERVE_STORAGE), "-c", "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])",
         storage_uri, str(mnt)],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0",
             **{k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "AWS_DEFAULT_REGION")}},
    )  # fmt: skip
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    assert (mnt / "MLmodel").is_file()
    shutil.copytree(mnt, tmp_path / "mnt-before")
    os.chmod(mnt, 0o755)

    # The predictor container as the manifest describes it (read-only root, user 10001, /tmp emptyDir, limits).
    port = free_port()
    predictor = local_deploy.start(manifest, mnt, port)
    try:
        predictor.wait_ready(container["readinessProbe"])
        assert predictor.readiness_path == "/v2/models/chest-ct-demo/ready"
        inspect = docker_client.api.inspect_container(predictor.container.id)
        assert inspect["Config"]["User"] == "10001:10001" and inspect["HostConfig"]["ReadonlyRootfs"] is True
        images = sorted((SAMPLE / "test").rglob("*.png"))[:3]
        raw = np.array([p.read_bytes() for p in images], dtype=np.object_)
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        answers = {}
        for binary in (False, True):
            tensor = triton.InferInput("image", [len(images)], "BYTES")
            tensor.set_data_from_numpy(
                raw if binary else np.array([base64.b64encode(b) for b in raw], dtype=np.object_), binary_data=binary
            )
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
            answer = client.infer("chest-ct-demo", [tensor], outputs=outputs)
            answers[binary] = answer.as_numpy("probabilities")
            labels = [x.decode() if isinstance(x, bytes) else x for x in answer.as_numpy("label")]
            assert labels == [
                ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"][i]
                for i in answers[binary].argmax(axis=1)
            ]
        predicted = radpipe("predict", "models:/chest-ct-demo@champion", *map(str, images), cwd=tmp_path, env=env)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        expected = np.array([probabilities(json.loads(line)) for line in predicted.stdout.splitlines()])
        assert np.allclose(answers[False], expected, atol=1e-5) and np.allclose(answers[True], expected, atol=1e-5)
    finally:
        log = predictor.logs()
        predictor.stop()
    assert "Traceback" not in log, log
    # Nothing was written into the model folder (mounted read-only, as KServe mounts it).
    assert sorted(p.relative_to(mnt) for p in mnt.rglob("*")) == sorted(
        p.relative_to(tmp_path / "mnt-before") for p in (tmp_path / "mnt-before").rglob("*")
    )
