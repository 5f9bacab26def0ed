"""The worst request the predictor accepts with its default limits: time, peak memory, and memory after a burst.

    .venv/bin/python bench/serve_limits.py                      # the default limits, every measurement
    .venv/bin/python bench/serve_limits.py --images 64 --side 5000 --skip-refusal   # issue 16's request

1. builds a model (prepare-base's MobileNetV2 at 224 px, random weights: decoding does not depend on them);
2. makes the request: ``--images`` PNG files of ``--side`` x ``--side`` pixels (default: as many images of
   the largest size ``--max_image_pixels`` allows as fit in the request budget ``--max_request_pixels``),
   smooth enough to compress under ``--max_request_bytes``; ``--mode`` RGBA is the costliest to
   preprocess (alpha compositing keeps four full-size copies alive at once);
3. starts ``python -m radpipe.serving`` with its default limits (plus ``--server-arg``), and reads the
   server's RSS from ``/proc/PID/status``: ``VmRSS`` now, ``VmHWM`` the peak since the last reset
   (``echo 5 > /proc/PID/clear_refs``);
4. measures: the RSS after warm-up, one request alone (time, peak RSS), ``--burst`` such requests at once
   (wall time, peak RSS), the RSS ``--settle`` seconds after each, and the RSS after small requests;
5. sends a request just over the pixel budget and times its refusal (413, before any pixel is decoded);
6. prints a Markdown table for docs/benchmarks.md and writes the numbers as JSON to ``bench/results/``.

Linux only (``/proc``). ``--env MALLOC_ARENA_MAX=2`` and the like compare allocator settings.
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
MODEL_NAME = "bench"


def build_model(image_size: int, workdir: Path) -> Path:
    from radpipe.components.prepare_base.prepare_base import prepare_base
    from radpipe.config import ModelConfig

    target = workdir / "model"
    prepare_base(ModelConfig(weights="none", image_size=image_size), CLASSES, target, workdir)
    return target


def make_png(side: int, mode: str, seed: int) -> bytes:
    """A ``side`` x ``side`` PNG that compresses well (smooth ramps with a seeded offset: distinct files)."""
    from PIL import Image

    ramp = (np.arange(side, dtype=np.uint32) * 256 // side).astype(np.uint8)
    plane = np.add.outer(ramp, ramp // 2 + seed).astype(np.uint8)
    if mode == "I;16":
        image = Image.fromarray(plane.astype(np.uint16) * 257)
    elif mode == "L":
        image = Image.fromarray(plane, "L")
    else:
        channels = [plane, plane.T, np.full_like(plane, 128)] + ([np.flipud(plane)] if mode == "RGBA" else [])
        image = Image.fromarray(np.ascontiguousarray(np.stack(channels, axis=-1)), mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def v2_body(pngs: list[bytes]) -> bytes:
    data = [base64.b64encode(p).decode() for p in pngs]
    return json.dumps({"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]}).encode()


class Server:
    """``python -m radpipe.serving`` on loopback, with its RSS read from /proc."""

    def __init__(self, model_dir: Path, port: int, log_path: Path, extra: list[str], env: dict[str, str]) -> None:
        self.port = port
        command = [
            sys.executable,
            "-m",
            "radpipe.serving",
            "--model_dir",
            str(model_dir),
            "--model_name",
            MODEL_NAME,
            "--http_port",
            str(port),
            "--enable_grpc",
            "false",
            "--enable_latency_logging",
            "false",
            *extra,
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 - the server's log for its lifetime
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.proc.kill()
        raise TimeoutError(f"the server did not get ready; see {log_path}")

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` memory field in bytes (``VmRSS``, ``VmHWM``)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def post(self, body: bytes) -> tuple[int, bytes, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
        started = time.perf_counter()
        connection.request("POST", f"/v2/models/{MODEL_NAME}/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        connection.close()
        return response.status, payload, elapsed

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def mib(n: int) -> float:
    return n / 2**20


def burst(server: Server, body: bytes, count: int) -> dict[str, Any]:
    """``count`` copies of ``body`` at once; every answer must be 200."""
    results: list[tuple[int, bytes, float]] = []
    lock = threading.Lock()

    def client() -> None:
        answer = server.post(body)
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=client) for _ in range(count)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    failed = [(s, p[:300]) for s, p, _ in results if s != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} requests failed, first: {failed[0]}")
    return {"wall_s": wall, "latencies_s": sorted(r[2] for r in results)}


def settled_rss(server: Server, seconds: float) -> int:
    time.sleep(seconds)
    return server.status("VmRSS")


def measure(server: Server, body: bytes, over: bytes | None, small: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Steps 4 and 5 of the module docstring, against a started server."""
    report: dict[str, Any] = {}
    for _ in range(5):  # warm-up: the decoder threads and the model's small-batch path
        assert server.post(small)[0] == 200
    report["rss_start_mib"] = mib(settled_rss(server, args.settle))
    print(f"RSS after warm-up: {report['rss_start_mib']:.0f} MiB", flush=True)

    server.reset_peak()
    status, payload, seconds = server.post(body)
    if status != 200:  # a request over the limits (e.g. issue 16's): how fast, and what it was told
        report["refused"] = {
            "status": status,
            "seconds": seconds,
            "peak_rss_mib": mib(server.status("VmHWM")),
            "error": json.loads(payload).get("error", ""),
        }
        print(f"refused: {json.dumps(report['refused'])}", flush=True)
        return report
    report["single"] = {
        "seconds": seconds,
        "peak_rss_mib": mib(server.status("VmHWM")),
        "rss_after_mib": mib(settled_rss(server, args.settle)),
    }
    print(f"one request: {json.dumps(report['single'])}", flush=True)

    report["bursts"] = []
    for _ in range(args.bursts):
        server.reset_peak()
        result = burst(server, body, args.burst)
        result["peak_rss_mib"] = mib(server.status("VmHWM"))
        result["rss_after_mib"] = mib(settled_rss(server, args.settle))
        report["bursts"].append(result)
        print(f"burst of {args.burst}: {json.dumps(result)}", flush=True)

    for _ in range(20):
        assert server.post(small)[0] == 200
    report["rss_after_small_mib"] = mib(settled_rss(server, args.settle))

    if over is not None:
        server.reset_peak()
        status, payload, seconds = server.post(over)
        report["refusal"] = {
            "status": status,
            "seconds": seconds,
            "peak_rss_mib": mib(server.status("VmHWM")),
            "error": json.loads(payload).get("error", "") if status != 200 else "",
        }
        print(f"over the budget: {json.dumps(report['refusal'])}", flush=True)
    return report


def print_table(report: dict[str, Any], burst_size: int) -> None:
    r = report["request"]
    print()
    print(f"Request: {r['images']} x {r['side']}² {r['mode']} PNG, {r['megapixels']:.0f} MP, {r['body_mib']:.1f} MiB")
    print()
    print("| step | wall s | peak RSS MiB | RSS after MiB |")
    print("|---|---:|---:|---:|")
    print(f"| server after warm-up | | | {report['rss_start_mib']:.0f} |")
    if "refused" in report:
        f = report["refused"]
        print(f"| the request, refused ({f['status']}) | {f['seconds']:.2f} | {f['peak_rss_mib']:.0f} | |")
        print(f"\n{f['error']}")
        return
    s = report["single"]
    print(f"| one request | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} | {s['rss_after_mib']:.0f} |")
    for i, b in enumerate(report["bursts"], 1):
        peak, after = b["peak_rss_mib"], b["rss_after_mib"]
        print(f"| burst {i}: {burst_size} at once | {b['wall_s']:.1f} | {peak:.0f} | {after:.0f} |")
    print(f"| after 20 small requests | | | {report['rss_after_small_mib']:.0f} |")
    if "refusal" in report:
        f = report["refusal"]
        print(f"| one image over the pixel budget ({f['status']}) | {f['seconds']:.2f} | {f['peak_rss_mib']:.0f} | |")


def main() -> int:
    from radpipe.serving.options import Limits

    defaults = Limits()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224, help="the model's input size")
    parser.add_argument("--side", type=int, default=int(defaults.max_image_pixels**0.5), help="image width = height")
    parser.add_argument("--images", type=int, default=0, help="images per request (default: fill the pixel budget)")
    parser.add_argument("--mode", default="RGBA", choices=["RGB", "RGBA", "L", "I;16"], help="PNG pixel mode")
    parser.add_argument("--burst", type=int, default=4, help="concurrent requests in the burst")
    parser.add_argument("--bursts", type=int, default=2, help="bursts, one after the other")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading 'RSS after'")
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment")
    parser.add_argument("--skip-refusal", action="store_true", help="do not send the over-budget request")
    parser.add_argument("--port", type=int, default=18766)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "serve_limits.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = args.images or max(1, defaults.max_request_pixels // (args.side * args.side))
    env = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="radpipe-serve-limits-") as tmp:
        workdir = Path(tmp)
        model_dir = build_model(args.image_size, workdir)
        pngs = [make_png(args.side, args.mode, seed) for seed in range(images)]
        body = v2_body(pngs)
        # One more image, half the size of the others: over the budget when the request fills it.
        over = None if args.skip_refusal else v2_body([*pngs, make_png(int(args.side / 2**0.5), args.mode, 99)])
        small = v2_body([make_png(args.image_size, "RGB", 0)])
        print(
            f"request: {images} x {args.side}x{args.side} {args.mode} PNG "
            f"({images * args.side**2 / 1e6:.1f} MP decoded), body {mib(len(body)):.1f} MiB",
            flush=True,
        )
        report: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average_before": os.getloadavg()[0],
            "request": {
                "images": images,
                "side": args.side,
                "mode": args.mode,
                "megapixels": images * args.side**2 / 1e6,
                "body_mib": mib(len(body)),
            },
            "server_args": args.server_arg,
            "env": env,
        }
        server = Server(model_dir, args.port, workdir / "server.log", args.server_arg, env)
        try:
            report.update(measure(server, body, over, small, args))
        finally:
            server.stop()
        report["load_average_after"] = os.getloadavg()[0]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report, args.burst)
    print(
        f"\nload average {report['load_average_before']:.2f} before, {report['load_average_after']:.2f} after; "
        f"wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
