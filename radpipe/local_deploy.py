"""Run an InferenceService's predictor container on this machine, as KServe would run it in a pod.

``radpipe deploy NAME@ALIAS --docker`` and the container tests go from the manifest, not around it: the
container spec that ``radpipe deploy`` renders (image, args, env, ports, probes, security context, the
``/tmp`` volume, resource limits) becomes one ``docker run``; the model folder — what KServe's storage
initializer puts in ``/mnt/models`` from ``STORAGE_URI`` — is mounted there read-only; "ready" means the
manifest's own readiness probe answered. Nothing here needs Kubernetes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpipe.deployment import MODEL_DIR
from radpipe.errors import RadpipeError
from radpipe.images import SERVING_IMAGE

_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def predictor_container(manifest: dict[str, Any]) -> dict[str, Any]:
    """The one container of the InferenceService's custom predictor."""
    try:
        (container,) = manifest["spec"]["predictor"]["containers"]
    except (KeyError, TypeError, ValueError):
        raise RadpipeError("the manifest is not an InferenceService with one predictor container") from None
    return container


def memory_bytes(quantity: str) -> int:
    for suffix, factor in _MEMORY_UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def cpu_nanos(quantity: str) -> int:
    return int(float(quantity[:-1]) * 1e6) if quantity.endswith("m") else int(float(quantity) * 1e9)


def run_arguments(manifest: dict[str, Any], model_dir: Path, host_port: int) -> dict[str, Any]:
    """``docker`` SDK ``containers.run`` arguments for the predictor, mapping each part of the pod spec."""
    from docker.types import Mount

    container = predictor_container(manifest)
    predictor = manifest["spec"]["predictor"]
    security = {**predictor.get("securityContext", {}), **container.get("securityContext", {})}
    (port,) = [p["containerPort"] for p in container.get("ports", [])] or [8080]
    emptydirs = {v["name"]: v.get("emptyDir", {}) for v in predictor.get("volumes", []) if "emptyDir" in v}
    tmpfs = {
        m["mountPath"]: f"size={memory_bytes(emptydirs[m['name']].get('sizeLimit', '1Gi'))}"
        for m in container.get("volumeMounts", [])
        if m["name"] in emptydirs
    }
    limits = container.get("resources", {}).get("limits", {})
    args: dict[str, Any] = {
        "image": container["image"],
        "command": list(container.get("args", [])),
        "environment": {e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
        "ports": {f"{port}/tcp": ("127.0.0.1", host_port)},
        "mounts": [Mount(MODEL_DIR, str(Path(model_dir).resolve()), type="bind", read_only=True)],
        "tmpfs": tmpfs,
        "read_only": bool(security.get("readOnlyRootFilesystem")),
        "cap_drop": list(security.get("capabilities", {}).get("drop", [])),
        "security_opt": ["no-new-privileges"] if security.get("allowPrivilegeEscalation") is False else [],
        "detach": True,
    }
    if "runAsUser" in security:
        args["user"] = f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"
    if "memory" in limits:
        args["mem_limit"] = memory_bytes(limits["memory"])
    if "cpu" in limits:
        args["nano_cpus"] = cpu_nanos(str(limits["cpu"]))
    return args


@dataclass
class RunningPredictor:
    """A predictor container started by :func:`start`; ``url`` is its HTTP port on loopback."""

    container: Any
    url: str
    readiness_path: str
    started: float

    def wait_ready(self, probe: dict[str, Any] | None = None, timeout: float | None = None) -> float:
        """Poll the readiness probe until it answers 200; seconds from start to ready.

        ``probe``: the manifest's ``readinessProbe`` (its delay, period and failure threshold bound the
        wait, as the kubelet's would); fails early, with the container's log, if the container exits.
        """
        probe = probe or {}
        period = float(probe.get("periodSeconds", 1))
        budget = timeout or float(probe.get("initialDelaySeconds", 0)) + period * int(probe.get("failureThreshold", 60))
        deadline = self.started + budget
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                raise RadpipeError(f"the predictor container exited before it was ready; its log:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + self.readiness_path, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(min(period, 1.0))
        raise RadpipeError(f"the predictor was not ready within {budget:.0f} s; its log:\n{self.logs()}")

    def logs(self, tail: int = 60) -> str:
        return self.container.logs(tail=tail).decode(errors="replace")

    def stop(self) -> None:
        import docker

        try:
            self.container.stop(timeout=10)
            self.container.remove()
        except docker.errors.NotFound:
            pass


def start(manifest: dict[str, Any], model_dir: Path, host_port: int, name: str = "") -> RunningPredictor:
    """Start the manifest's predictor with ``model_dir`` at ``/mnt/models``; wait with ``wait_ready``."""
    from radpipe.pipelines.docker_runner import check_images, docker_client, source_checkout

    client = docker_client()
    container_spec = predictor_container(manifest)
    if container_spec["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1] == SERVING_IMAGE:
        check_images(client, {"serving": container_spec["image"]}, source_checkout())
    args = run_arguments(manifest, model_dir, host_port)
    if name:
        args["name"] = name
    started = time.monotonic()
    try:
        container = client.containers.run(**args)
    except Exception as exc:  # docker.errors.ImageNotFound, APIError: say which image and what to do
        raise RadpipeError(
            f"cannot start {args['image']}: {exc}; build it with `make images` (or pass --image)"
        ) from exc
    probe = container_spec.get("readinessProbe", {}).get("httpGet", {})
    return RunningPredictor(container, f"http://127.0.0.1:{host_port}", probe.get("path", "/v2/health/ready"), started)
