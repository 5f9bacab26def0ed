"""Serving latency and throughput: the predictor under a bounded load, next to a bare model loop.

    .venv/bin/python bench/serve_bench.py --weights PATH/TO/mobilenet_v2_..._no_top.h5

1. builds a realistic model: prepare-base's MobileNetV2 at 224 px (ImageNet backbone, untrained head:
   the head's weights do not change the cost);
2. turns the bundled chest CT sample into 224x224 PNG files (one image per request, as a client sends);
3. times a bare loop in this process: decode + preprocess + ``predict_on_batch`` per image (batch 1),
   and ``predict_on_batch`` alone over batches of 16, over the same images;
4. starts ``python -m radpipe.serving`` in a second process and, from this one, sends a fixed number of
   V2 requests at concurrency 1, 4 and 16 over keep-alive connections on loopback;
5. prints a Markdown table (for docs/benchmarks.md) and writes the numbers as JSON.

The load is bounded (``--requests`` per level, after a warm-up) so that it never runs away on a shared
machine. Results depend on what else the machine is doing: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def load_average() -> float:
    return os.getloadavg()[0]


def build_model(weights: str, image_size: int, workdir: Path) -> Path:
    from radpipe.components.prepare_base.prepare_base import prepare_base
    from radpipe.config import ModelConfig

    target = workdir / "model"
    prepare_base(ModelConfig(weights=weights, image_size=image_size), CLASSES, target, workdir)
    return target


def served_model(uri: str, workdir: Path) -> tuple[Path, str]:
    """A local copy of ``uri`` as a radpipe model folder, and a description of it."""
    from radpipe.classifier import Classifier
    from radpipe.modelspec import save_model_dir

    classifier = Classifier.load(uri)
    target = workdir / "model"
    save_model_dir(classifier.model, classifier.spec, target)
    spec = classifier.spec
    members = f", ensemble of {len(spec.members)}" if spec.is_ensemble else ""
    return target, f"{uri} ({spec.backbone} {spec.preprocessing.image_size}px{members})"


def read_spec_size(model_dir: Path) -> int:
    from radpipe.modelspec import read_spec

    return read_spec(model_dir).preprocessing.image_size


def request_images(source: Path, image_size: int, limit: int) -> list[bytes]:
    """PNG files of ``image_size``² made from the sample's CT slices (what a client would upload)."""
    from PIL import Image

    from radpipe.preprocessing import is_image_file

    files = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))[:limit]
    pngs = []
    for path in files:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def bare_loop(model_dir: Path, pngs: list[bytes], rounds: int) -> dict[str, Any]:
    from radpipe.classifier import Classifier

    classifier = Classifier.load(str(model_dir))
    arrays = [classifier.preprocess(p) for p in pngs]
    for a in arrays[:3]:  # trace the graph
        classifier.predict_arrays([a])
    latencies = []
    started = time.perf_counter()
    for _ in range(rounds):
        for png in pngs:
            t = time.perf_counter()
            classifier.predict_arrays([classifier.preprocess(png)])
            latencies.append(time.perf_counter() - t)
    single = {"images": len(latencies), "throughput": len(latencies) / (time.perf_counter() - started)}
    single.update(percentiles(latencies))

    latencies = []
    started = time.perf_counter()
    for _ in range(rounds):
        for a in arrays:
            t = time.perf_counter()
            classifier.predict_arrays([a])
            latencies.append(time.perf_counter() - t)
    predict_only = {"images": len(latencies), "throughput": len(latencies) / (time.perf_counter() - started)}
    predict_only.update(percentiles(latencies))

    batch = np.stack((arrays * 16)[:16])
    classifier.predict_arrays(batch)
    started, n = time.perf_counter(), 0
    for _ in range(max(1, rounds * len(pngs) // 16)):
        classifier.predict_arrays(batch)
        n += 16
    batched = {"images": n, "throughput": n / (time.perf_counter() - started)}
    return {"batch1_predict": predict_only, "batch1": single, "batch16": batched}


def start_server(model_dir: Path, port: int, log_path: Path, max_batch_size: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "radpipe.serving",
        "--model_dir",
        str(model_dir),
        "--model_name",
        "bench",
        "--http_port",
        str(port),
        "--enable_grpc",
        "false",
        "--max_batch_size",
        str(max_batch_size),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - the server's log for its lifetime
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"the server did not get ready; see {log_path}")


def load(port: int, bodies: list[bytes], concurrency: int, requests: int, warmup: int) -> dict[str, Any]:
    """``requests`` V2 requests from ``concurrency`` threads, each on its own keep-alive connection."""
    lock = threading.Lock()
    counter: dict[str, Any] = {"next": 0}
    latencies: list[float] = []
    failures: list[str] = []

    def take() -> int | None:
        with lock:
            if counter["next"] >= warmup + requests:
                return None
            if counter["next"] == warmup:
                counter["started"] = time.perf_counter()  # the timed part starts with the first timed request
            counter["next"] += 1
            return counter["next"] - 1

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while (i := take()) is not None:
            body = bodies[i % len(bodies)]
            t = time.perf_counter()
            connection.request("POST", "/v2/models/bench/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - t
            if response.status != 200:
                failures.append(f"{response.status}: {payload[:200]!r}")
            elif i >= warmup:
                with lock:
                    latencies.append(elapsed)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    wall = time.perf_counter() - counter["started"]
    result = {"concurrency": concurrency, "requests": len(latencies), "throughput": len(latencies) / wall}
    result.update(percentiles(latencies))
    return result


def batch_histogram(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("radpipe_serving_batch_size_sum") or line.startswith("radpipe_serving_batch_size_count"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="imagenet", help="backbone weights: a .h5 file, 'imagenet' or 'none'")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--model",
        default="",
        help="serve this model instead (a radpipe or MLflow model folder, or models:/NAME@ALIAS); its record sets "
        "the image size, e.g. the search's registered ensemble",
    )
    parser.add_argument("--images", type=Path, default=REPO / "examples" / "chest-ct-sample")
    parser.add_argument("--distinct-images", type=int, default=24, help="distinct request bodies to cycle through")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--bare-rounds", type=int, default=4, help="passes of the bare loop over the images")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "serve_bench.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="radpipe-serve-bench-") as tmp:
        workdir = Path(tmp)
        load_before = load_average()
        if args.model:
            model_dir, described = served_model(args.model, workdir)
        else:
            model_dir = build_model(args.weights, args.image_size, workdir)
            described = f"MobileNetV2 {args.image_size}px ({args.weights})"
        args.image_size = read_spec_size(model_dir)
        pngs = request_images(args.images, args.image_size, args.distinct_images)
        bodies = [
            json.dumps(
                {
                    "inputs": [
                        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(p).decode()]}
                    ]
                }
            ).encode()
            for p in pngs
        ]
        print(f"model: {described}; {len(pngs)} distinct PNG bodies", flush=True)

        bare = bare_loop(model_dir, pngs, args.bare_rounds)
        print(f"bare loop: {json.dumps(bare)}", flush=True)

        server = start_server(model_dir, args.port, workdir / "server.log", args.max_batch_size)
        levels = []
        try:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                before = batch_histogram(args.port)
                result = load(args.port, bodies, concurrency, args.requests, warmup=2 * concurrency)
                after = batch_histogram(args.port)
                calls = after["radpipe_serving_batch_size_count"] - before.get("radpipe_serving_batch_size_count", 0)
                images = after["radpipe_serving_batch_size_sum"] - before.get("radpipe_serving_batch_size_sum", 0)
                result["mean_batch"] = images / calls if calls else 0.0
                result["load_average"] = load_average()
                levels.append(result)
                print(f"server: {json.dumps(result)}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
        # Again after the server runs: on a shared machine the load changes, and the comparison should not
        # depend on which phase got the quieter minute.
        bare_after = bare_loop(model_dir, pngs, args.bare_rounds)
        print(f"bare loop after: {json.dumps(bare_after)}", flush=True)

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_before": load_before,
        "image_size": args.image_size,
        "model": described,
        "max_batch_size": args.max_batch_size,
        "bare": bare,
        "bare_after": bare_after,
        "server": levels,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    # "vs bare loop": against the mean throughput of the two bare batch-1 predict_on_batch runs.
    base = (bare["batch1_predict"]["throughput"] + bare_after["batch1_predict"]["throughput"]) / 2
    print()
    print("| run | p50 ms | p95 ms | p99 ms | images/s | vs bare loop | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for when, run in (("before", bare), ("after", bare_after)):
        rows = [
            (f"bare loop ({when}): predict_on_batch, 1 image per call", run["batch1_predict"]),
            (f"bare loop ({when}): PNG decode + preprocess + predict, 1 image", run["batch1"]),
        ]
        for name, r in rows:
            print(
                f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['throughput']:.1f} "
                f"| {100 * r['throughput'] / base:.0f} % | 1 |"
            )
        b16 = run["batch16"]["throughput"]
        print(
            f"| bare loop ({when}): predict_on_batch, 16 images per call | | | "
            f"| {b16:.1f} | {100 * b16 / base:.0f} % | 16 |"
        )
    for r in levels:
        print(
            f"| server, concurrency {r['concurrency']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['throughput']:.1f} | {100 * r['throughput'] / base:.0f} % | {r['mean_batch']:.1f} |"
        )
    print(f"\nload average: {load_before:.2f} before, {levels[-1]['load_average']:.2f} after; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
