"""The binary data extension of the Open Inference Protocol, as Triton defines it, for requests.

A client such as ``tritonclient.http`` may send an inference request as a JSON header followed by raw
tensor bytes: the header's length is in ``Inference-Header-Content-Length``, and each input that travels
in binary says how many bytes it takes in ``parameters.binary_data_size``. ``BYTES`` elements are each a
4-byte little-endian length and that many bytes; other datatypes are the tensor's values, little-endian,
row-major. KServe 0.21 parses such requests only for text ``BYTES`` (image files fail its UTF-8 decode), so
the server's middleware turns them into the equivalent JSON request here, before KServe sees them:
``BYTES`` as base64, numbers as lists. Every malformed framing is a :class:`RequestError` (400) that says
what was wrong. Binary *outputs* (``binary_data`` on a requested output) are KServe's own.
"""

from __future__ import annotations

import base64
import math
import struct

import numpy as np
import orjson

from radpipe.serving.protocol import RequestError

HEADER_LENGTH = "inference-header-content-length"
NUMERIC = {
    "BOOL": "<?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
HINT = (
    "see the binary data extension of the Open Inference Protocol: a JSON header of that many bytes, then each "
    "binary input's bytes in order (BYTES elements as a 4-byte little-endian length and the bytes)"
)


def _fail(kind: str, message: str) -> RequestError:
    return RequestError(kind, f"{message}; {HINT}")


def header_length(value: bytes | str, body_size: int) -> int:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text.strip().isdigit():
        raise _fail("bad_binary_framing", f"the {HEADER_LENGTH} header is {text!r}, not a number of bytes")
    length = int(text)
    if not 0 < length <= body_size:
        raise _fail(
            "bad_binary_framing",
            f"the {HEADER_LENGTH} header says {length} bytes of JSON, but the body has {body_size} bytes",
        )
    return length


def _bytes_elements(data: bytes, count: int, where: str) -> list[str]:
    elements, offset = [], 0
    for i in range(count):
        if offset + 4 > len(data):
            raise _fail("bad_binary_framing", f"{where}: element {i} has no 4-byte length prefix")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise _fail(
                "bad_binary_framing",
                f"{where}: element {i} says {size} bytes, but only {len(data) - offset} remain in its binary data",
            )
        elements.append(base64.b64encode(data[offset : offset + size]).decode("ascii"))
        offset += size
    if offset != len(data):
        raise _fail("bad_binary_framing", f"{where}: {len(data) - offset} bytes follow its {count} elements")
    return elements


def to_json_request(body: bytes, json_length: int) -> bytes:
    """A binary-extension request body -> the same request as Open Inference Protocol JSON."""
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError:
        raise _fail("bad_binary_framing", f"the first {json_length} bytes of the body are not a JSON header") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise _fail("bad_binary_framing", "the JSON header has no 'inputs' list")
    offset = json_length
    for index, tensor in enumerate(header["inputs"]):
        if not isinstance(tensor, dict):
            raise _fail("bad_binary_framing", f"inputs[{index}] is not an object")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue  # this input is JSON already
        where = f"input '{tensor.get('name', index)}'"
        size = parameters.pop("binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _fail("bad_binary_framing", f"{where}: binary_data_size is {size!r}, not a number of bytes")
        if offset + size > len(body):
            raise _fail(
                "bad_binary_framing",
                f"{where}: binary_data_size says {size} bytes, but {len(body) - offset} bytes follow",
            )
        data, offset = body[offset : offset + size], offset + size
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _fail("bad_binary_framing", f"{where}: shape {shape!r} is not a list of sizes")
        count = math.prod(shape)
        datatype = str(tensor.get("datatype", "")).upper()
        if datatype == "BYTES":
            tensor["data"] = _bytes_elements(data, count, where)
        elif datatype in NUMERIC:
            dtype = np.dtype(NUMERIC[datatype])
            if size != count * dtype.itemsize:
                raise _fail(
                    "bad_binary_framing",
                    f"{where}: shape {shape} of {datatype} takes {count * dtype.itemsize} bytes, "
                    f"binary_data_size says {size}",
                )
            tensor["data"] = np.frombuffer(data, dtype=dtype).tolist()
        else:
            raise _fail("bad_binary_framing", f"{where}: datatype {datatype!r} has no binary form")
        tensor["parameters"] = parameters
    if offset != len(body):
        raise _fail("bad_binary_framing", f"{len(body) - offset} bytes follow the last binary input")
    return orjson.dumps(header)
