"""Requests in, answers out: KServe V1 and Open Inference Protocol V2 bodies <-> model input and output.

Everything here runs on bytes in memory; nothing a client sends is ever written to disk. Every way a
request can be wrong raises :class:`RequestError` with a ``kind`` (a metrics label), an HTTP status and a
message that says what was wrong and what to send instead.

Images go through :meth:`radpipe.classifier.Classifier.preprocess`, the one preprocessing function the
model was trained with (DICOM files windowed as its record says); an FP32 tensor is taken as already
preprocessed model input. No DICOM header value reaches an answer or the log: errors name only standard
names (SOP class, transfer syntax).

Image files are handled in two steps, so that memory and CPU are bounded by the limits before they are
spent: :func:`decode_v2` / :func:`decode_v1` read every image's *header* (size, format; no pixel decoded)
and refuse the request if one image, or all of them together, is over ``--max_image_pixels`` /
``--max_request_pixels``; then :func:`decode_file` decodes and preprocesses one image at a time into its
row of the (n, size, size, 3) model input, so that only one full-size image of a request is ever in memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from radpipe import dicom
from radpipe.classifier import Classifier, Prediction
from radpipe.errors import RadpipeError
from radpipe.preprocessing import ImageError
from radpipe.serving.options import Limits

INPUT_NAME = "image"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_GRADCAM = "gradcam"
TENSOR_DATATYPES = {"FP32": np.float32, "UINT8": np.uint8}


class RequestError(RadpipeError):
    """A request the server cannot answer, and why; the server answers ``status`` and keeps serving."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass
class ImageFile:
    """An image file of a request, checked from its header and not decoded yet."""

    index: int
    """Its row in :attr:`Decoded.images`."""
    data: bytes
    where: str
    """How error messages name it: ``input 'image'[3]``, ``instances[0]``."""
    pixels: int


@dataclass
class Decoded:
    """A request turned into model input."""

    protocol: str
    """'v1' or 'v2'."""
    images: np.ndarray
    """(n, size, size, 3) RGB pixels in [0, 255] (uint8 from images, float32 from tensors). Rows that come
    from image files are filled by :func:`decode_files` (one image at a time, see ``files``)."""
    files: list[ImageFile] = field(default_factory=list)
    """Image files still to decode into ``images``; their headers have passed the limits."""
    explain: bool = False
    request_id: str | None = None
    requested_outputs: Any = None
    batch_token: int | None = None
    """The micro-batcher's token for this request (see ``MicroBatcher.expect``)."""
    from_grpc: bool = False
    pixels: int = 0
    """Pixels its image files hold (from their headers): what decoding them costs."""


@dataclass
class Answer:
    """What the model said about a :class:`Decoded` request."""

    probabilities: np.ndarray
    gradcam_png: list[bytes] | None = None


# ------------------------------------------------------------------------------------------- images


def image_file(index: int, data: bytes, limits: Limits, where: str) -> ImageFile:
    """An image file, refused from its header alone (no pixel decoded) if it is not an image or too large."""
    if not data:
        raise RequestError("empty_image", f"{where} is empty; send the bytes of a PNG, JPEG or DICOM file")
    if dicom.looks_like_dicom(data):
        try:
            width, height = dicom.header_size(data)  # reads the header only
        except dicom.DicomError as exc:
            raise RequestError("not_an_image", f"{where} {exc}") from None
    else:
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
        except Image.DecompressionBombError as exc:
            raise RequestError("image_too_large", f"{where} is too large to decode safely ({exc})", 413) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise RequestError(
                "not_an_image",
                f"{where} is not an image file radpipe can read ({len(data)} bytes starting {data[:8]!r}); "
                "send a PNG, JPEG, TIFF, BMP, WebP or DICOM file, base64-encoded in JSON",
            ) from None
    if width * height > limits.max_image_pixels:
        raise RequestError(
            "image_too_large",
            f"{where} is {width}x{height} = {width * height / 1e6:.1f} megapixels; this server accepts at most "
            f"{limits.max_image_pixels / 1e6:.1f} (--max_image_pixels). Downscale the image before sending it",
            413,
        )
    return ImageFile(index, data, where, width * height)


def check_request_pixels(files: list[ImageFile], limits: Limits) -> None:
    """Refuse a request whose images, together, are more to decode than ``--max_request_pixels`` allows."""
    total = sum(f.pixels for f in files)
    if total > limits.max_request_pixels:
        largest = max(files, key=lambda f: f.pixels)
        raise RequestError(
            "request_too_many_pixels",
            f"the request's {len(files)} images hold {total / 1e6:.1f} megapixels in all (the largest, "
            f"{largest.where}, {largest.pixels / 1e6:.1f}); this server decodes at most "
            f"{limits.max_request_pixels / 1e6:.1f} megapixels per request (--max_request_pixels). Send the "
            "images in several requests, or downscale them: the model sees them at its own input size anyway",
            413,
        )


def decode_file(file: ImageFile, classifier: Classifier) -> np.ndarray:
    """One image file -> the model's input (size x size x 3 uint8): the full-size pixels live only here."""
    try:
        return classifier.preprocess(file.data)
    except ImageError as exc:
        raise RequestError("not_an_image", f"{file.where}: {exc}") from None


def _b64(text: str, where: str) -> bytes:
    if text.startswith("data:") and ";base64," in text[:100]:  # a data: URL, as a browser's FileReader makes
        text = text.split(";base64,", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            "bad_base64", f"{where} is not valid base64; encode the image file's bytes with standard base64"
        ) from None


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError("no_images", "the request holds no image; send at least one")
    if n > limits.max_images:
        raise RequestError(
            "too_many_images",
            f"the request holds {n} images; this server takes at most {limits.max_images} per request "
            "(--max_images): split it into several requests",
            413,
        )


def _tensor(values: Any, datatype: str, shape: list[int], size: int, where: str) -> np.ndarray:
    """A client's tensor as (n, size, size, 3) pixels, with a message naming the expected shape."""
    expected = f"[n, {size}, {size}, 3]"
    dims = list(shape)
    if len(dims) == 3:
        dims = [1, *dims]
    if len(dims) != 4 or dims[1:] != [size, size, 3] or dims[0] < 1:
        raise RequestError(
            "wrong_shape",
            f"{where} has shape {list(shape)}; this model takes {datatype} tensors of shape {expected}: RGB pixels "
            f"in [0, 255], resized to {size}x{size} (or send the image file itself as BYTES)",
        )
    try:
        array = np.asarray(values, dtype=TENSOR_DATATYPES[datatype])
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            "bad_tensor", f"{where}: the data is not a {datatype} tensor (ragged or non-numeric)"
        ) from None
    if array.size != math.prod(dims):
        raise RequestError(
            "wrong_shape", f"{where} says shape {list(shape)} ({math.prod(dims)} values) but holds {array.size} values"
        )
    array = array.reshape(dims)
    if datatype == "FP32" and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 255.0):
        raise RequestError(
            "bad_tensor",
            f"{where} holds values outside [0, 255] (or NaN/inf); send raw RGB pixels in [0, 255]: the model "
            "normalises them itself",
        )
    return array


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# ---------------------------------------------------------------------------------------------- V2


def decode_v2(request: Any, classifier: Classifier, limits: Limits) -> Decoded:
    """An Open Inference Protocol request (``kserve.InferRequest``) -> model input.

    One input: ``BYTES`` of shape ``[n]`` holding image files (base64 strings over REST, raw bytes with
    the binary extension or gRPC), or an ``FP32``/``UINT8`` tensor ``[n, size, size, 3]``.
    ``parameters.explain = true`` asks for a Grad-CAM overlay per image.
    """
    inputs = list(request.inputs or [])
    hint = (
        f'send one input named "{INPUT_NAME}": {{"name": "{INPUT_NAME}", "shape": [1], "datatype": "BYTES", '
        '"data": ["<base64 PNG/JPEG>"]}'
    )
    if len(inputs) != 1:
        raise RequestError("wrong_inputs", f"the request has {len(inputs)} inputs; {hint}")
    tensor = inputs[0]
    where = f"input '{tensor.name}'"
    datatype = tensor.datatype.upper()
    size = classifier.image_size
    files: list[ImageFile] = []
    if datatype == "BYTES":
        try:
            # kserve keeps binary-extension and gRPC raw contents in _raw_data (raw file bytes, no base64).
            if tensor._raw_data is not None:
                items = list(tensor.as_numpy().reshape(-1))
            else:
                items = list(np.asarray(tensor.data, dtype=object).reshape(-1)) if tensor.data is not None else []
        except (ValueError, TypeError):
            raise RequestError("bad_tensor", f"{where}: the data does not match its shape {tensor.shape}") from None
        if math.prod(tensor.shape or [0]) != len(items) or len(tensor.shape or []) not in (1, 2):
            raise RequestError(
                "wrong_shape",
                f"{where} has shape {tensor.shape} but holds {len(items)} elements; BYTES inputs are one image "
                "file per element, shape [n]",
            )
        _check_count(len(items), limits)
        for i, item in enumerate(items):
            label = f"{where}[{i}]"
            if isinstance(item, str):
                files.append(image_file(i, _b64(item, label), limits, label))
            elif isinstance(item, bytes | bytearray):
                files.append(image_file(i, bytes(item), limits, label))
            else:
                raise RequestError(
                    "bad_bytes", f"{label} is a {type(item).__name__}; BYTES elements are base64 strings"
                )
        check_request_pixels(files, limits)
        images = np.empty((len(files), size, size, 3), np.uint8)
    elif datatype in TENSOR_DATATYPES:
        values = tensor.as_numpy() if tensor._raw_data is not None else tensor.data
        images = _tensor(values, datatype, list(tensor.shape or []), size, where)
        _check_count(len(images), limits)
    else:
        raise RequestError(
            "wrong_datatype",
            f"{where} has datatype {tensor.datatype}; send BYTES (image files) or FP32 pixels of shape "
            f"[n, {size}, {size}, 3]",
        )
    parameters = dict(request.parameters or {})
    return Decoded(
        protocol="v2",
        images=images,
        files=files,
        pixels=sum(f.pixels for f in files),
        explain=_flag(parameters.get("explain", False)),
        request_id=request.id,
        requested_outputs=request.request_outputs,
    )


def encode_v2(
    decoded: Decoded, answer: Answer, classifier: Classifier, model_name: str, model_version: str | None = None
) -> Any:
    from kserve import InferOutput, InferResponse

    n, classes = answer.probabilities.shape
    labels = np.array([classifier.class_names[int(i)] for i in answer.probabilities.argmax(axis=1)], dtype=object)
    outputs = [
        InferOutput(OUTPUT_PROBABILITIES, [n, classes], "FP32", answer.probabilities.astype(np.float32)),
        InferOutput(OUTPUT_LABEL, [n], "BYTES", labels),
    ]
    if answer.gradcam_png is not None:
        pngs = np.array([base64.b64encode(p).decode("ascii") for p in answer.gradcam_png], dtype=object)
        outputs.append(InferOutput(OUTPUT_GRADCAM, [n], "BYTES", pngs, parameters={"content_type": "image/png"}))
    return InferResponse(
        response_id=decoded.request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=outputs,
        requested_outputs=decoded.requested_outputs,
    )


# ---------------------------------------------------------------------------------------------- V1


V1_HINT = 'a V1 request is {"instances": [{"image": {"b64": "<base64 PNG/JPEG>"}}]}'


def decode_v1(body: Any, classifier: Classifier, limits: Limits, explain: bool) -> Decoded:
    """``{"instances": [{"image": {"b64": ...}}, ...]}`` (or ``{"b64": ...}``, or nested pixel lists)."""
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError("wrong_format", f"the request has no 'instances'; {V1_HINT}")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise RequestError("wrong_format", f"'instances' must be a list; {V1_HINT}")
    _check_count(len(instances), limits)
    size = classifier.image_size
    images = np.empty((len(instances), size, size, 3), np.float32)
    files: list[ImageFile] = []
    for i, instance in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(instance, dict):
            value = instance.get("image", instance)
            if isinstance(value, dict) and isinstance(value.get("b64"), str):
                files.append(image_file(i, _b64(value["b64"], where), limits, where))
                continue
        elif isinstance(instance, list):
            images[i] = _tensor(instance, "FP32", [size, size, 3], size, where)[0]
            continue
        raise RequestError("wrong_format", f"{where} is neither an image nor a pixel array; {V1_HINT}")
    check_request_pixels(files, limits)
    return Decoded(protocol="v1", images=images, files=files, explain=explain, pixels=sum(f.pixels for f in files))


def encode_v1(decoded: Decoded, answer: Answer, classifier: Classifier) -> dict[str, Any]:
    predictions: list[Prediction] = classifier.to_predictions(answer.probabilities)
    rows = [p.to_dict() for p in predictions]
    if answer.gradcam_png is None:
        return {"predictions": rows}
    for row, png in zip(rows, answer.gradcam_png, strict=True):
        row["gradcam"] = {"b64": base64.b64encode(png).decode("ascii"), "content_type": "image/png"}
    return {"explanations": rows}
