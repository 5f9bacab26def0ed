"""The images, measured: sizes, cold and warm builds, the demo in containers against the subprocess runner,
and the serving container from start to ready and under a V2 client.

    .venv/bin/python bench/containers.py [--base-image radpipe-base:bookworm-py3.11] [--cold] [--requests 200]

1. image sizes (``docker image inspect``);
2. builds with ``images/build.sh``: ``--cold`` first removes the images and Docker's build cache (then every
   layer is built, packages downloaded); always then a warm rebuild (nothing changed) and a rebuild after a
   one-line change to radpipe's sources (only the wheel and radpipe's own layer are rebuilt);
3. ``radpipe run --config examples/demo.yaml`` with ``--runner subprocess`` and ``--runner docker``, each in
   a fresh folder: wall time of each, their ratio, and the registered metrics side by side;
4. the docker run's champion through ``radpipe.local_deploy``: the InferenceService's predictor container
   from ``docker run`` to its readiness probe answering, then ``--requests`` single-image requests from
   ``tritonclient.http`` (JSON and binary), p50/p95 latency.

Writes bench/results/containers-<time>.json and prints a Markdown table for docs/benchmarks.md. Timings
depend on what else the machine does: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES = ["ingest", "prepare-base", "train", "evaluate-and-register", "serving", "mlflow"]
SAMPLE = REPO / "examples" / "chest-ct-sample"


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def image_sizes(tag: str) -> dict[str, float]:
    sizes = {}
    for image in IMAGES:
        out = run(["docker", "image", "inspect", "-f", "{{.Size}}", f"radpipe-{image}:{tag}"])
        sizes[image] = round(int(out.stdout.strip()) / 1e6) if out.returncode == 0 else float("nan")
    return sizes


def build(base_image: str) -> tuple[float, dict[str, float]]:
    """``images/build.sh`` for every image; total and per-image seconds (from its '== built' lines)."""
    env = {**os.environ, **({"BASE_IMAGE": base_image} if base_image else {})}
    started = time.monotonic()
    result = run([str(REPO / "images" / "build.sh")], env=env, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"images/build.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    per_image = {}
    for line in result.stdout.splitlines():
        if line.startswith("== built radpipe-"):
            name = line.split()[2].split(":")[0].removeprefix("radpipe-")
            per_image[name] = float(line.split(" in ")[1].split(" s")[0])
    return time.monotonic() - started, per_image


def cold_start() -> None:
    for image in IMAGES:
        run(["docker", "rmi", "-f", f"radpipe-{image}:0.1.0"])
    run(["docker", "builder", "prune", "-af"])
    run(["docker", "image", "prune", "-f"])


def demo(runner: str, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    result = run(
        [sys.executable, "-m", "radpipe", "run", "--runner", runner, "--config", str(REPO / "examples" / "demo.yaml")],
        cwd=workdir,
        env={**os.environ, "MLFLOW_TRACKING_URI": "", "RADPIPE_HOME": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"radpipe run --runner {runner} failed:\n{result.stderr[-4000:]}")
    rows = {line.split(" ", 1)[0]: line.split(" ", 1)[1].strip() for line in result.stdout.splitlines() if " " in line}
    return {"seconds": seconds, **{k: rows.get(k, "") for k in ("registered", "gate", "aliases", "test")}}


def serving(workdir: Path, requests: int) -> dict[str, Any]:
    import mlflow
    import tritonclient.http as triton

    from radpipe import deployment, local_deploy, storage, tracking
    from radpipe.mlflow_server import free_port

    mlflow.set_tracking_uri(f"sqlite:///{workdir / tracking.EMBEDDED_DIR / 'mlflow.db'}")
    served = deployment.resolve(deployment.ModelRef.parse("chest-ct-demo@champion"))
    manifest = deployment.render_inference_service(served)
    container = local_deploy.predictor_container(manifest)
    port = free_port()
    predictor = local_deploy.start(manifest, storage.local_path(served.storage_uri), port)
    try:
        ready = predictor.wait_ready(container["readinessProbe"])
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        files = sorted((SAMPLE / "test").rglob("*.png"))
        latencies: dict[str, list[float]] = {"json": [], "binary": []}
        for mode in latencies:
            binary = mode == "binary"
            for i in range(requests + 10):
                raw = files[i % len(files)].read_bytes()
                tensor = triton.InferInput("image", [1], "BYTES")
                data = raw if binary else base64.b64encode(raw)
                tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
                started = time.perf_counter()
                client.infer("chest-ct-demo", [tensor])
                if i >= 10:  # after a warm-up
                    latencies[mode].append(time.perf_counter() - started)
    finally:
        predictor.stop()
    stats = {
        mode: {f"p{q}_ms": float(np.percentile(np.asarray(v) * 1000, q)) for q in (50, 95)}
        for mode, v in latencies.items()
    }
    return {"start_to_ready_s": ready, "requests": requests, **stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", ""), help="BASE_IMAGE for the builds")
    parser.add_argument("--cold", action="store_true", help="remove the images and the build cache first")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per mode")
    parser.add_argument("--skip-builds", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    results["load_average_at_start"] = os.getloadavg()[0]
    if not args.skip_builds:
        if args.cold:
            cold_start()
            results["cold_build_s"], results["cold_build_per_image_s"] = build(args.base_image)
        results["warm_build_s"], _ = build(args.base_image)
        touched = REPO / "radpipe" / "__init__.py"
        original = touched.read_text()
        try:
            touched.write_text(original + "# bench: a one-line change\n")
            results["rebuild_after_code_change_s"], _ = build(args.base_image)
        finally:
            touched.write_text(original)
        build(args.base_image)  # back to images of the checkout as it is
    results["image_size_mb"] = image_sizes("0.1.0")
    with tempfile.TemporaryDirectory(prefix="radpipe-bench-") as tmp:
        for runner in ("subprocess", "docker"):
            (Path(tmp) / runner).mkdir()
            shutil.copytree(SAMPLE, Path(tmp) / runner / "examples" / "chest-ct-sample")
            results[f"demo_{runner}"] = demo(runner, Path(tmp) / runner)
        results["docker_over_subprocess"] = results["demo_docker"]["seconds"] / results["demo_subprocess"]["seconds"]
        results["serving"] = serving(Path(tmp) / "docker", args.requests)
    results["load_average_at_end"] = os.getloadavg()[0]

    out = REPO / "bench" / "results" / f"containers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
