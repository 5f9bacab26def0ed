"""The KServe predictor over real HTTP: health, metadata, V2 and V1 inference, explain, bad input, metrics.

The server is ``python -m radpipe.serving`` in its own process (as in its container), on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from radpipe.classifier import Classifier
from radpipe.cli import main as radpipe_main

from conftest import SAMPLE, SAMPLE_CLASSES, ServerProcess
from dicom_samples import ct_from_png, report_object, unsupported_syntax
from phi import fake_phi, find_phi

TEST_IMAGES = sorted((SAMPLE / "test").rglob("*.png"))


def call(url: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def v2_request(*items: str, explain: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [{"name": "image", "shape": [len(items)], "datatype": "BYTES", "data": list(items)}]
    }
    if explain:
        request["parameters"] = {"explain": True}
    return request


def outputs(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in answer["outputs"]}


@pytest.fixture(scope="module")
def predicted(served_model_dir: Path) -> dict[str, dict[str, Any]]:
    """What ``radpipe predict`` says about each bundled test image, keyed by path."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert radpipe_main(["predict", str(served_model_dir), str(SAMPLE / "test")]) == 0
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert len(rows) == len(TEST_IMAGES) == 12
    assert len({r["label"] for r in rows}) >= 1 and len({json.dumps(r["scores"]) for r in rows}) == len(rows)
    return {r["path"]: r for r in rows}


# ------------------------------------------------------------------------------------ health, metadata


def test_health_and_metadata(model_server: ServerProcess) -> None:
    url = model_server.url
    assert call(f"{url}/v2/health/live") == (200, {"live": True})
    assert call(f"{url}/v2/health/ready") == (200, {"ready": True})
    assert call(f"{url}/v2/models/chest-ct/ready") == (200, {"name": "chest-ct", "ready": True})
    assert call(f"{url}/v2/models")[1] == {"models": ["chest-ct"]}
    status, meta = call(f"{url}/v2/models/chest-ct")
    assert status == 200
    assert meta["name"] == "chest-ct" and meta["class_names"] == SAMPLE_CLASSES
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert {"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 3]} in meta["inputs"]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]} in meta["outputs"]
    assert meta["radpipe"]["preprocessing"]["image_size"] == 32 and meta["radpipe"]["explain"] is True
    assert call(f"{url}/v2/models/lungs")[0] == 404


# ---------------------------------------------------------------------------------------- inference


def test_v2_and_v1_answers_match_radpipe_predict(model_server: ServerProcess, predicted: dict) -> None:
    for path in TEST_IMAGES:
        expected = predicted[str(path)]
        scores = [expected["scores"][c] for c in SAMPLE_CLASSES]

        status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(path)))
        assert status == 200, answer
        out = outputs(answer)
        assert out["probabilities"]["shape"] == [1, 4] and out["probabilities"]["datatype"] == "FP32"
        np.testing.assert_allclose(out["probabilities"]["data"], scores, rtol=1e-4, atol=1e-6)
        assert out["label"]["data"] == [expected["label"]]
        assert "gradcam" not in out

        v1 = {"instances": [{"image": {"b64": b64(path)}}]}
        status, answer = call(f"{model_server.url}/v1/models/chest-ct:predict", v1)
        assert status == 200, answer
        (prediction,) = answer["predictions"]
        assert prediction["label"] == expected["label"]
        np.testing.assert_allclose([prediction["scores"][c] for c in SAMPLE_CLASSES], scores, rtol=1e-4, atol=1e-6)


def test_several_images_in_one_request_keep_their_order(model_server: ServerProcess, predicted: dict) -> None:
    paths = TEST_IMAGES[:6]
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(*(b64(p) for p in paths)))
    assert status == 200, answer
    probabilities = np.array(outputs(answer)["probabilities"]["data"]).reshape(6, 4)
    for row, path in zip(probabilities, paths, strict=True):
        np.testing.assert_allclose(
            row, [predicted[str(path)]["scores"][c] for c in SAMPLE_CLASSES], rtol=1e-4, atol=1e-6
        )
    assert outputs(answer)["label"]["data"] == [predicted[str(p)]["label"] for p in paths]


def test_tritonclient_json_and_binary_get_the_answers_of_radpipe_predict(
    model_server: ServerProcess, predicted: dict
) -> None:
    """A V2 client nobody here wrote: image files as BYTES, base64 in JSON and raw with the binary extension,
    answers asked for as JSON and as binary outputs."""
    import tritonclient.http as triton

    paths = TEST_IMAGES[:3]
    raw = np.array([p.read_bytes() for p in paths], dtype=np.object_)
    client = triton.InferenceServerClient(model_server.url.removeprefix("http://"))
    for binary in (False, True):
        tensor = triton.InferInput("image", [len(paths)], "BYTES")
        data = raw if binary else np.array([base64.b64encode(b) for b in raw], dtype=np.object_)
        tensor.set_data_from_numpy(data, binary_data=binary)
        wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")]
        answer = client.infer("chest-ct", [tensor], outputs=wanted)
        expected = [[predicted[str(p)]["scores"][c] for c in SAMPLE_CLASSES] for p in paths]
        np.testing.assert_allclose(answer.as_numpy("probabilities"), expected, rtol=1e-4, atol=1e-6)
        labels = [x.decode() if isinstance(x, bytes) else x for x in answer.as_numpy("label")]
        assert labels == [predicted[str(p)]["label"] for p in paths]
    # A raw FP32 tensor in binary, too.
    pixels = np.stack([Classifier.load(str(model_server.model_dir)).preprocess(p) for p in paths]).astype(np.float32)
    tensor = triton.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    answer = client.infer("chest-ct", [tensor])
    expected = [[predicted[str(p)]["scores"][c] for c in SAMPLE_CLASSES] for p in paths]
    np.testing.assert_allclose(answer.as_numpy("probabilities"), expected, rtol=1e-4, atol=1e-6)


def binary_request(url: str, header: dict, tail: bytes, length: str | None = None) -> tuple[int, Any]:
    head = json.dumps(header).encode()
    request = urllib.request.Request(f"{url}/v2/models/chest-ct/infer", data=head + tail, method="POST")
    request.add_header("Inference-Header-Content-Length", length if length is not None else str(len(head)))
    request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_malformed_binary_framing_gets_a_400_that_says_what_was_wrong(model_server: ServerProcess) -> None:
    png = TEST_IMAGES[0].read_bytes()
    framed = len(png).to_bytes(4, "little") + png

    def header(size: int, datatype: str = "BYTES", shape: list[int] | None = None) -> dict:
        tensor = {"name": "image", "shape": shape or [1], "datatype": datatype}
        return {"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}

    url = model_server.url
    cases = {
        "header length not a number": binary_request(url, header(len(framed)), framed, length="abc"),
        "header length past the body": binary_request(url, header(len(framed)), framed, length="999999"),
        "unframed BYTES": binary_request(url, header(len(png)), png),
        "element longer than its data": binary_request(url, header(8), (99).to_bytes(4, "little") + b"abcd"),
        "binary_data_size past the body": binary_request(url, header(len(framed) + 10), framed),
        "bytes after the last input": binary_request(url, header(len(framed)), framed + b"junk"),
        "FP32 of the wrong length": binary_request(url, header(10, "FP32", [1, 32, 32, 3]), b"\0" * 10),
        "header not JSON": binary_request(url, {}, b"", length="2"),
    }
    for case, (status, answer) in cases.items():
        assert status == 400, (case, status, answer)
        assert "binary data extension" in answer["error"], (case, answer)
    assert "'abc', not a number of bytes" in cases["header length not a number"][1]["error"]
    assert "4 bytes follow its 1 elements" not in cases["unframed BYTES"][1]["error"]
    assert "takes 12288 bytes, binary_data_size says 10" in cases["FP32 of the wrong length"][1]["error"]
    # ... and a well-framed request still works.
    status, answer = binary_request(url, header(len(framed)), framed)
    assert status == 200 and outputs(answer)["probabilities"]["shape"] == [1, 4]


def test_fp32_tensor_input_is_taken_as_preprocessed_pixels(
    model_server: ServerProcess, served_model_dir: Path, predicted: dict
) -> None:
    classifier = Classifier.load(str(served_model_dir))
    path = TEST_IMAGES[4]
    pixels = classifier.preprocess(path).astype(np.float32)
    request = {
        "inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": pixels.ravel().tolist()}]
    }
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", request)
    assert status == 200, answer
    scores = [predicted[str(path)]["scores"][c] for c in SAMPLE_CLASSES]
    np.testing.assert_allclose(outputs(answer)["probabilities"]["data"], scores, rtol=1e-4, atol=1e-6)
    # V1 takes the same pixels as a nested list
    status, answer = call(f"{model_server.url}/v1/models/chest-ct:predict", {"instances": [pixels.tolist()]})
    assert status == 200 and answer["predictions"][0]["label"] == predicted[str(path)]["label"]


def test_concurrent_requests_each_get_their_own_answer(model_server: ServerProcess, predicted: dict) -> None:
    """Sixteen clients at once: the micro-batcher may stack them into one model call; answers must not mix."""
    results: dict[int, tuple[int, Any]] = {}

    def client(i: int) -> None:
        path = TEST_IMAGES[i % len(TEST_IMAGES)]
        results[i] = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(path)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 16
    for i, (status, answer) in results.items():
        assert status == 200, answer
        expected = predicted[str(TEST_IMAGES[i % len(TEST_IMAGES)])]
        scores = [expected["scores"][c] for c in SAMPLE_CLASSES]
        np.testing.assert_allclose(outputs(answer)["probabilities"]["data"], scores, rtol=1e-4, atol=1e-6)


def test_requested_outputs_are_honoured(model_server: ServerProcess, predicted: dict) -> None:
    path = TEST_IMAGES[3]
    request = {**v2_request(b64(path)), "outputs": [{"name": "label"}]}
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", request)
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == [predicted[str(path)]["label"]]


def test_grpc_v2_takes_raw_image_bytes_and_refuses_bad_ones_clearly(
    model_server: ServerProcess, predicted: dict
) -> None:
    import asyncio

    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    def request(*blobs: bytes) -> InferRequest:
        tensor = InferInput("image", [len(blobs)], "BYTES")
        tensor.set_data_from_numpy(np.array(blobs, dtype=np.object_), binary_data=True)
        return InferRequest(model_name="chest-ct", infer_inputs=[tensor])

    async def ask(infer_request: InferRequest) -> Any:
        client = InferenceGRPCClient(f"127.0.0.1:{model_server.grpc_port}", timeout=60, retries=2)
        try:
            return await client.infer(infer_request)
        finally:
            await client.close()

    path = TEST_IMAGES[5]
    answer = asyncio.run(ask(request(path.read_bytes())))
    probabilities = answer.get_output_by_name("probabilities").as_numpy()
    scores = [predicted[str(path)]["scores"][c] for c in SAMPLE_CLASSES]
    np.testing.assert_allclose(probabilities.ravel(), scores, rtol=1e-4, atol=1e-6)
    label = answer.get_output_by_name("label").as_numpy().ravel()[0]
    assert (label.decode() if isinstance(label, bytes) else label) == predicted[str(path)]["label"]

    with pytest.raises(grpc.RpcError) as refused:
        asyncio.run(ask(request(b"not an image at all")))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an image" in refused.value.details()
    assert model_server.proc.poll() is None


def _png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


def test_explain_adds_a_gradcam_overlay(model_server: ServerProcess, predicted: dict) -> None:
    path = TEST_IMAGES[0]
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(path), explain=True))
    assert status == 200, answer
    out = outputs(answer)
    assert out["label"]["data"] == [predicted[str(path)]["label"]]
    assert out["gradcam"]["datatype"] == "BYTES" and out["gradcam"]["parameters"]["content_type"] == "image/png"
    overlay = _png(out["gradcam"]["data"][0])
    assert overlay.size == (32, 32) and overlay.mode == "RGB"
    assert np.asarray(overlay).std() > 0  # an image, not a blank

    status, answer = call(
        f"{model_server.url}/v1/models/chest-ct:explain", {"instances": [{"image": {"b64": b64(path)}}]}
    )
    assert status == 200, answer
    (explanation,) = answer["explanations"]
    assert explanation["label"] == predicted[str(path)]["label"]
    assert _png(explanation["gradcam"]["b64"]).size == (32, 32)


# ---------------------------------------------------------------------------------------- bad input


def _image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 40, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


def _b64bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    # (case, path, body, status, words the error must contain)
    ("not an image", "v2", v2_request(_b64bytes(b"this is a radiology report, not a picture")), 400, "not an image"),
    ("truncated PNG", "v2", v2_request(_b64bytes(_image_bytes(64, 64)[:60])), 400, "not a readable image"),
    ("empty body", "v2", b"", 400, "body is empty"),
    ("empty body V1", "v1", b"", 400, "body is empty"),
    ("not JSON", "v2", b"{inputs: oops", 400, "not valid JSON"),
    ("no inputs", "v2", {"inputs": []}, 400, "has 0 inputs"),
    ("input without data", "v2", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}, 400, "data"),
    ("bad base64", "v2", v2_request("%%% not base64 %%%"), 400, "not valid base64"),
    (
        "ragged BYTES data",
        "v2",
        {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [["a"], ["b", "c"]]}]},
        400,
        "BYTES elements are base64 strings",
    ),
    (
        "BYTES of numbers",
        "v2",
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [7]}]},
        400,
        "base64",
    ),
    ("empty image", "v2", v2_request(""), 400, "is empty"),
    (
        "wrong tensor shape",
        "v2",
        {"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "FP32", "data": [0.0] * (64 * 64 * 3)}]},
        400,
        "[n, 32, 32, 3]",
    ),
    (
        "shape and data disagree",
        "v2",
        {"inputs": [{"name": "image", "shape": [2, 32, 32, 3], "datatype": "FP32", "data": [0.0] * (32 * 32 * 3)}]},
        400,
        "holds 3072 values",
    ),
    (
        "pixels out of range",
        "v2",
        {"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [-1.0] * (32 * 32 * 3)}]},
        400,
        "outside [0, 255]",
    ),
    (
        "wrong datatype",
        "v2",
        {"inputs": [{"name": "image", "shape": [1], "datatype": "INT64", "data": [1]}]},
        400,
        "BYTES",
    ),
    ("image over the pixel limit", "v2", v2_request(_b64bytes(_image_bytes(1200, 1000))), 413, "megapixels"),
    (
        "images over the request's pixel budget",
        "v2",
        v2_request(*[_b64bytes(_image_bytes(1000, 800))] * 3),
        413,
        "hold 2.4 megapixels in all (the largest, input 'image'[0], 0.8); this server decodes at most 2.0 "
        "megapixels per request (--max_request_pixels)",
    ),
    (
        "V1 images over the request's pixel budget",
        "v1",
        {"instances": [{"image": {"b64": _b64bytes(_image_bytes(1000, 800))}}] * 3},
        413,
        "(--max_request_pixels)",
    ),
    ("too many images", "v2", v2_request(*[_b64bytes(_image_bytes(8, 8))] * 9), 413, "at most 8"),
    ("body over the size limit", "v2", v2_request("A" * (1 << 20)), 413, "over this server's limit"),
    ("unknown model", "v2-lungs", v2_request(_b64bytes(_image_bytes(8, 8))), 404, "no model named 'lungs'"),
    ("unknown model V1", "v1-lungs", {"instances": []}, 404, "no model named 'lungs'"),
    ("V1 without instances", "v1", {"image": "x"}, 400, "no 'instances'"),
    ("V1 empty instances", "v1", {"instances": []}, 400, "no image"),
    ("V1 instance of the wrong kind", "v1", {"instances": [{"picture": 1}]}, 400, "neither an image"),
]


def _url(server: ServerProcess, where: str) -> str:
    return {
        "v2": f"{server.url}/v2/models/chest-ct/infer",
        "v1": f"{server.url}/v1/models/chest-ct:predict",
        "v2-lungs": f"{server.url}/v2/models/lungs/infer",
        "v1-lungs": f"{server.url}/v1/models/lungs:predict",
    }[where]


@pytest.mark.parametrize(("case", "where", "body", "status", "words"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_that_says_what_was_wrong(
    model_server: ServerProcess, case: str, where: str, body: Any, status: int, words: str
) -> None:
    got, answer = call(_url(model_server, where), body, method="POST")
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["error"], answer


def test_the_pixel_budget_is_checked_from_the_headers_before_any_image_is_decoded(model_server: ServerProcess) -> None:
    """A truncated PNG has a readable header and unreadable pixels: inside the budget its decoding fails
    (400), over the budget the request is refused before any decoding (413)."""
    url = _url(model_server, "v2")
    whole = _image_bytes(1000, 800)
    truncated = whole[:60]
    status, answer = call(url, v2_request(_b64bytes(truncated), _b64bytes(whole)))
    assert status == 400 and "input 'image'[0]" in answer["error"] and "not a readable image" in answer["error"]
    status, answer = call(url, v2_request(_b64bytes(truncated), _b64bytes(whole), _b64bytes(whole)))
    assert status == 413 and "(--max_request_pixels)" in answer["error"], answer
    # Two full images are within the 2 MP budget: answered, in order.
    status, answer = call(url, v2_request(_b64bytes(whole), _b64bytes(_image_bytes(800, 1000))))
    assert status == 200, answer
    assert outputs(answer)["probabilities"]["shape"] == [2, 4]


def test_metadata_and_answers_say_the_version_is_unknown_when_nothing_told_the_server(
    model_server: ServerProcess,
) -> None:
    status, meta = call(f"{model_server.url}/v2/models/chest-ct")
    assert status == 200 and meta["versions"] == [] and meta["radpipe"]["model_version"] is None
    assert meta["radpipe"]["limits"]["max_request_pixels"] == 2_000_000
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(TEST_IMAGES[0])))
    assert status == 200 and answer["model_version"] is None
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/versions/1/infer", v2_request(b64(TEST_IMAGES[0])))
    assert status == 404 and "a model of unknown version" in answer["error"]


def test_the_repository_api_is_off_and_unload_from_a_web_page_changes_nothing(model_server: ServerProcess) -> None:
    """Issue 16: a page on any site could POST text/plain to .../unload and take the model offline."""
    url = model_server.url

    def post(path: str, headers: dict[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(f"{url}{path}", data=b"{}", method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    page = {"Content-Type": "text/plain", "Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"}
    status, answer = post("/v2/repository/models/chest-ct/unload", page)
    assert status == 403 and "from another web site (http://attacker.example)" in answer["error"]
    for action in ("unload", "load"):
        status, answer = post(f"/v2/repository/models/chest-ct/{action}", {"Content-Type": "application/json"})
        assert status == 403, answer
        assert "repository API (load/unload) is off" in answer["error"] and "--enable_repository_api" in answer["error"]
    assert call(f"{url}/v2/health/ready") == (200, {"ready": True})
    assert call(f"{url}/v2/models/chest-ct/ready") == (200, {"name": "chest-ct", "ready": True})
    status, answer = call(f"{url}/v2/models/chest-ct/infer", v2_request(b64(TEST_IMAGES[0])))
    assert status == 200, answer


def test_grpc_repository_calls_are_refused_while_the_api_is_off(model_server: ServerProcess) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(f"127.0.0.1:{model_server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="chest-ct"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--enable_repository_api" in refused.value.details()
        assert stub.ModelReady(pb.ModelReadyRequest(name="chest-ct"), timeout=30).ready is True
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready is True


def test_inference_requests_from_other_web_sites_are_refused(model_server: ServerProcess, predicted: dict) -> None:
    """A browser on another origin may send 'simple' cross-origin POSTs (text/plain, no preflight); the
    server must not act on them. Same-origin pages (the upload page) and programs are unaffected."""
    url = f"{model_server.url}/v2/models/chest-ct/infer"
    body = json.dumps(v2_request(b64(TEST_IMAGES[0]))).encode()

    def post(headers: dict[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    own = f"http://127.0.0.1:{model_server.port}"
    refused = [
        {"Origin": "http://attacker.example"},  # a browser without Sec-Fetch-Site
        {"Origin": "null"},  # a sandboxed frame, a file:// page
        {"Origin": f"http://localhost:{model_server.port}"},  # another origin, even if it is the same machine
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": own},  # Sec-Fetch-Site is the browser's word: it wins
    ]
    for headers in refused:
        status, answer = post(headers)
        assert status == 403 and "from another web site" in answer["error"], (headers, answer)
    allowed = [{}, {"Origin": own}, {"Sec-Fetch-Site": "same-origin", "Origin": own}, {"Sec-Fetch-Site": "none"}]
    for headers in allowed:
        status, answer = post(headers)
        assert status == 200, (headers, answer)
        assert outputs(answer)["label"]["data"] == [predicted[str(TEST_IMAGES[0])]["label"]]
    # GETs are not state-changing: metadata answers whatever page asks (a browser will not show it to the page).
    request = urllib.request.Request(f"{model_server.url}/v2/models/chest-ct", headers={"Origin": "http://x.example"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def test_the_server_survives_200_bad_requests_in_a_row(model_server: ServerProcess, predicted: dict) -> None:
    for i in range(200):
        _, where, body, status, _ = BAD_REQUESTS[i % len(BAD_REQUESTS)]
        got, answer = call(_url(model_server, where), body, method="POST")
        assert got == status, (i, answer)
    path = TEST_IMAGES[1]
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(path)))
    assert status == 200, answer
    assert outputs(answer)["label"]["data"] == [predicted[str(path)]["label"]]
    assert model_server.proc.poll() is None


def test_metrics_count_requests_latency_and_errors_by_kind(model_server: ServerProcess) -> None:
    call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(TEST_IMAGES[0])))
    call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(_b64bytes(b"not an image")))
    status, text = call(f"{model_server.url}/metrics")
    assert status == 200 and isinstance(text, str)
    samples = {}
    for line in text.splitlines():
        if line.startswith("radpipe_serving_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    # version="": this server was not told which registered version it serves (see test_serving_security.py)
    ok = 'radpipe_serving_requests_total{code="200",endpoint="infer_v2",model="chest-ct",version=""}'
    assert samples[ok] >= 1
    error = 'radpipe_serving_request_errors_total{endpoint="infer_v2",kind="not_an_image",model="chest-ct",version=""}'
    assert samples[error] >= 1
    count = 'radpipe_serving_request_duration_seconds_count{endpoint="infer_v2",model="chest-ct",version=""}'
    assert samples[count] >= samples[ok]
    assert any(k.startswith("radpipe_serving_request_duration_seconds_bucket") for k in samples)
    assert samples['radpipe_serving_batch_size_count{model="chest-ct",version=""}'] >= 1
    assert "request_predict_seconds" in text  # KServe's own per-stage histograms are still there


def test_nothing_is_written_to_disk_by_requests(model_server: ServerProcess) -> None:
    """The server's working directory is also its TMPDIR; after every test above it is still empty."""
    call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(TEST_IMAGES[2]), explain=True))
    assert sorted(p.name for p in model_server.workdir.rglob("*")) == []


def test_the_upload_page_is_served(model_server: ServerProcess) -> None:
    status, page = call(f"{model_server.url}/ui/")
    assert status == 200 and isinstance(page, str)
    assert '<input id="file" type="file"' in page and "/infer" in page and "explain: true" in page
    assert "http://" not in page and "https://" not in page  # nothing from the internet


# --------------------------------------------------------------------------------------------- DICOM


def test_dicom_is_windowed_as_radpipe_predict_does_and_answers_like_its_png(
    model_server: ServerProcess, served_model_dir: Path, tmp_path: Path
) -> None:
    """A CT slice as DICOM (written from a PNG by the inverse of the lung window) gets the PNG's answer."""
    phi = fake_phi(1)
    png = TEST_IMAGES[3]
    slice_ = ct_from_png(png, tmp_path / "1.2.840.99", header=phi.header)  # no extension, as exports come
    classifier = Classifier.load(str(served_model_dir))
    (expected,) = classifier.predict([slice_])
    (from_png,) = classifier.predict([png])
    assert expected.scores == pytest.approx(from_png.scores, abs=1e-6)
    status, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(slice_), explain=True))
    assert status == 200, answer
    out = outputs(answer)
    assert out["label"]["data"] == [expected.label] and len(out["gradcam"]["data"]) == 1
    np.testing.assert_allclose(out["probabilities"]["data"], [expected.scores[c] for c in SAMPLE_CLASSES], atol=1e-5)
    v1_request = {"instances": [{"image": {"b64": b64(slice_)}}]}
    status, v1 = call(f"{model_server.url}/v1/models/chest-ct:predict", v1_request)
    assert status == 200 and v1["predictions"][0]["label"] == expected.label
    assert not find_phi([], [phi], texts=[("v2", json.dumps(answer)), ("v1", json.dumps(v1))])


def test_dicom_that_cannot_be_classified_gets_a_4xx_that_names_no_header_value(
    model_server: ServerProcess, tmp_path: Path
) -> None:
    phi = fake_phi(2)
    report = report_object(tmp_path / "report.dcm", phi.header)
    video = unsupported_syntax(TEST_IMAGES[0], tmp_path / "video.dcm", phi.header)
    huge = ct_from_png(TEST_IMAGES[0], tmp_path / "huge.dcm", header=phi.header)
    ds = pydicom.dcmread(huge)
    ds.Rows, ds.Columns = 1100, 1000  # 1.1 MP: over this server's limit, refused from the header alone
    ds.save_as(huge)
    answers = []
    for path, status, words in (
        (report, 400, "is a DICOM Comprehensive SR Storage"),
        (video, 400, "compressed as MPEG2"),
        (huge, 413, "1000x1100 = 1.1 megapixels"),
    ):
        got, answer = call(f"{model_server.url}/v2/models/chest-ct/infer", v2_request(b64(path)))
        assert got == status and words in answer["error"], answer
        answers.append((path.name, json.dumps(answer)))
    assert not find_phi([], [phi], texts=[*answers, ("server log", model_server.log_path.read_text(errors="replace"))])
    assert model_server.proc.poll() is None
