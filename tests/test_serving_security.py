"""Binding, tokens, the repository API and readiness, over real HTTP and gRPC against real servers.

``secured_server`` (conftest) listens on every interface with an inference token, the repository API on
behind its own token, and ``--model_version 7``; ``model_server`` has the defaults (loopback only, open,
repository API off). Tests that unload the model load it again before they end.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from radpipe.errors import RadpipeError
from radpipe.serving import versions

from conftest import INFERENCE_TOKEN, REPOSITORY_TOKEN, SAMPLE, ServerProcess, lan_address, reachable

IMAGE = SAMPLE / "test" / "normal" / "10 - Copy (3).png"


def http(
    url: str, body: dict | bytes | None = None, token: str | None = None, method: str | None = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """One request; (status, parsed JSON or text, response headers with lower-case names)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as err:
        status, text, got = err.code, err.read().decode(), err.headers
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = text
    return status, parsed, {k.lower(): v for k, v in got.items()}


def infer_body() -> dict[str, Any]:
    data = [base64.b64encode(IMAGE.read_bytes()).decode()]
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": data}]}


# ------------------------------------------------------------------------------------------ binding


def test_the_server_listens_on_loopback_by_default_and_on_every_interface_with_host(
    model_server: ServerProcess, secured_server: ServerProcess
) -> None:
    address = lan_address()
    if not address:
        pytest.skip("this machine has no network interface but loopback: binding cannot be told apart")
    assert reachable("127.0.0.1", model_server.port) and reachable("127.0.0.1", model_server.grpc_port)
    assert not reachable(address, model_server.port), "the default server answers on a network interface"
    assert not reachable(address, model_server.grpc_port), "the default server's gRPC answers on a network interface"
    # --host 0.0.0.0 (the serving image's entry point): probes and clients from outside reach it
    assert reachable(address, secured_server.port) and reachable(address, secured_server.grpc_port)
    status, answer, _ = http(f"http://{address}:{secured_server.port}/v2/health/ready")
    assert (status, answer) == (200, {"ready": True})


# ------------------------------------------------------------------------------------- inference token


def test_inference_and_metadata_need_the_token_and_probes_do_not(secured_server: ServerProcess) -> None:
    url = secured_server.url
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/chest-ct/ready", "/v1/models/chest-ct", "/ui/"):
        status, _, _ = http(url + path)
        assert status == 200, path
    for path in ("/v2/models", "/v2/models/chest-ct", "/v2", "/v1/models", "/metrics"):
        status, answer, headers = http(url + path)
        assert status == 401, (path, answer)
        assert headers["www-authenticate"].startswith("Bearer")
        assert "--auth_token_file" in answer["error"]
    for token in (None, "wrong-token-of-some-length", INFERENCE_TOKEN + "x", INFERENCE_TOKEN[:-1], REPOSITORY_TOKEN):
        status, answer, headers = http(f"{url}/v2/models/chest-ct/infer", infer_body(), token=token)
        assert status == 401 and "Authorization: Bearer <token>" in answer["error"], token
    status, answer, _ = http(f"{url}/v2/models/chest-ct/infer", infer_body(), token=INFERENCE_TOKEN)
    assert status == 200 and answer["model_name"] == "chest-ct", answer
    # The scheme is case-insensitive (RFC 7235); the token is not.
    status, _, _ = http(f"{url}/v2/models/chest-ct", Authorization=f"bearer {INFERENCE_TOKEN}")
    assert status == 200
    status, _, _ = http(f"{url}/v2/models/chest-ct", Authorization=f"Bearer {INFERENCE_TOKEN.upper()}")
    assert status == 401
    status, _, _ = http(f"{url}/v2/models/chest-ct", Authorization=f"Basic {INFERENCE_TOKEN}")
    assert status == 401


def test_grpc_needs_the_token_too_except_for_probes(secured_server: ServerProcess) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    request = pb.ModelInferRequest(
        model_name="chest-ct",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(IMAGE.read_bytes()).to_bytes(4, "little") + IMAGE.read_bytes()],
    )
    with grpc.insecure_channel(f"127.0.0.1:{secured_server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready is True
        assert stub.ModelReady(pb.ModelReadyRequest(name="chest-ct"), timeout=30).ready is True
        for metadata in ((), (("authorization", "Bearer nope-nope-nope-nope"),)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, metadata=metadata, timeout=60)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "--auth_token_file" in refused.value.details()
        answer = stub.ModelInfer(request, metadata=(("authorization", f"Bearer {INFERENCE_TOKEN}"),), timeout=60)
        assert answer.model_name == "chest-ct" and answer.model_version == "7"
        assert [o.name for o in answer.outputs] == ["probabilities", "label"]


# ---------------------------------------------------------------------------------------- versions


def test_the_served_version_is_in_metadata_answers_and_metrics(secured_server: ServerProcess) -> None:
    url = secured_server.url
    status, meta, _ = http(f"{url}/v2/models/chest-ct", token=INFERENCE_TOKEN)
    assert status == 200 and meta["versions"] == ["7"] and meta["radpipe"]["model_version"] == "7"
    status, answer, _ = http(f"{url}/v2/models/chest-ct/infer", infer_body(), token=INFERENCE_TOKEN)
    assert status == 200 and answer["model_version"] == "7"
    # The protocol's versioned paths: the served version answers, another one is not here.
    status, answer, _ = http(f"{url}/v2/models/chest-ct/versions/7/infer", infer_body(), token=INFERENCE_TOKEN)
    assert status == 200 and answer["model_version"] == "7"
    assert http(f"{url}/v2/models/chest-ct/versions/7", token=INFERENCE_TOKEN)[1]["versions"] == ["7"]
    assert http(f"{url}/v2/models/chest-ct/versions/7/ready")[0] == 200
    status, answer, _ = http(f"{url}/v2/models/chest-ct/versions/6/infer", infer_body(), token=INFERENCE_TOKEN)
    assert status == 404
    assert "version 6 of 'chest-ct' is not served here; this server serves version 7" in answer["error"]
    status, text, _ = http(f"{url}/metrics", token=INFERENCE_TOKEN)
    assert status == 200
    assert 'radpipe_serving_requests_total{code="200",endpoint="infer_v2",model="chest-ct",version="7"}' in text
    assert 'radpipe_serving_images_total{model="chest-ct",version="7"}' in text
    assert 'kind="unknown_version",model="chest-ct",version="7"' in text


def test_model_version_must_agree_with_the_uri() -> None:
    assert versions.resolve("models:/chest-ct/3") == versions.ResolvedModel("models:/chest-ct/3", "3")
    assert versions.resolve("models:/chest-ct/3", "3").version == "3"
    assert versions.resolve("/mnt/models", "12") == versions.ResolvedModel("/mnt/models", "12")
    assert versions.resolve("/mnt/models") == versions.ResolvedModel("/mnt/models", None)
    with pytest.raises(RadpipeError, match="--model_version 4 contradicts models:/chest-ct/3"):
        versions.resolve("models:/chest-ct/3", "4")


# -------------------------------------------------------------------- repository API and readiness


def test_unload_needs_the_repository_token_and_readiness_follows_the_model(secured_server: ServerProcess) -> None:
    url = secured_server.url
    unload, load = f"{url}/v2/repository/models/chest-ct/unload", f"{url}/v2/repository/models/chest-ct/load"
    # The inference token is not enough; nor is a web page on another site, whatever it sends.
    for token in (None, INFERENCE_TOKEN):
        status, answer, headers = http(unload, b"", token=token)
        assert status == 401 and "--repository_token_file" in answer["error"], answer
        assert headers["www-authenticate"].startswith("Bearer")
    page = {"Origin": "http://attacker.example", "Content_Type": "text/plain"}
    status, answer, _ = http(unload, b"x", token=REPOSITORY_TOKEN, method="POST", **page)
    assert status == 403 and "another web site" in answer["error"]
    status, answer, _ = http(f"{url}/v2/repository/models/lungs/unload", b"", token=REPOSITORY_TOKEN)
    assert status == 404 and "this server serves 'chest-ct'" in answer["error"]
    assert http(f"{url}/v2/health/ready")[:2] == (200, {"ready": True})

    status, answer, _ = http(unload, b"", token=REPOSITORY_TOKEN)
    try:
        assert (status, answer) == (200, {"name": "chest-ct", "unload": True})
        # No model can answer: every readiness probe says so, and requests get 503 with what to do.
        assert http(f"{url}/v2/health/ready")[0] == 503
        assert http(f"{url}/v2/models/chest-ct/ready")[0] == 503
        assert http(f"{url}/v1/models/chest-ct")[0] == 503
        assert http(f"{url}/v2/health/live")[:2] == (200, {"live": True})  # alive: don't restart it
        status, answer, _ = http(f"{url}/v2/models/chest-ct/infer", infer_body(), token=INFERENCE_TOKEN)
        assert status == 503 and "is not loaded" in answer["error"] and "/load" in answer["error"]
        assert http(f"{url}/v2/models/chest-ct", token=INFERENCE_TOKEN)[0] == 503
        _assert_grpc_not_ready(secured_server)
    finally:
        status, answer, _ = http(load, b"", token=REPOSITORY_TOKEN)
    assert (status, answer) == (200, {"name": "chest-ct", "load": True})
    assert http(f"{url}/v2/health/ready")[:2] == (200, {"ready": True})
    assert http(f"{url}/v2/models/chest-ct/ready")[0] == 200
    status, answer, _ = http(f"{url}/v2/models/chest-ct/infer", infer_body(), token=INFERENCE_TOKEN)
    assert status == 200 and answer["model_version"] == "7"


def _assert_grpc_not_ready(server: ServerProcess) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready is False
        assert stub.ModelReady(pb.ModelReadyRequest(name="chest-ct"), timeout=30).ready is False


def test_grpc_repository_calls_need_the_repository_token(secured_server: ServerProcess) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(f"127.0.0.1:{secured_server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        for metadata in ((), (("authorization", f"Bearer {INFERENCE_TOKEN}"),)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.RepositoryModelUnload(
                    pb.RepositoryModelUnloadRequest(model_name="chest-ct"), metadata=metadata, timeout=30
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.ModelReady(pb.ModelReadyRequest(name="chest-ct"), timeout=30).ready is True


# --------------------------------------------------------------------------------- refused to start


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--auth_token_file", "{tmp}/missing.token"], "cannot read the token file"),
        (["--auth-token-file", "{tmp}/short.token"], "at least 16 characters (found 5 characters)"),
        (["--enable_repository_api"], "--enable_repository_api needs --repository_token_file"),
        (["--repository_token_file", "{tmp}/good.token"], "the repository API is off"),
        (["--model_version", "7 beta"], "is not a version"),
        (["--max_request_pixels", "0"], "--max_request_pixels must be a positive integer"),
    ],
)
def test_bad_security_flags_stop_the_server_before_it_listens(
    served_model_dir: Path, tmp_path: Path, flags: list[str], words: str
) -> None:
    import subprocess
    import sys

    (tmp_path / "short.token").write_text("short")
    (tmp_path / "good.token").write_text(REPOSITORY_TOKEN)
    argv = [f.format(tmp=tmp_path) for f in flags]
    for command in (
        [sys.executable, "-m", "radpipe.serving", "--model_dir", str(served_model_dir), *argv],
        [sys.executable, "-m", "radpipe", "serve", str(served_model_dir), *argv],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "error:" in done.stderr and words in done.stderr, done.stderr[-2000:]
