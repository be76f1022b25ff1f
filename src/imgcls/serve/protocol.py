"""Open Inference Protocol v2 (KServe / Triton) requests and responses, as pure functions.

Accepted: one input named ``images``, either a pixel tensor (``UINT8``, or ``FP32`` holding
pixel values 0..255) of shape [N, C, H, W] or [N, H, W, C] at the model's input size, or a
``BYTES`` tensor of shape [N] / [N, 1] whose elements are encoded image files (decoded,
converted and resized with the run's preprocessing). Tensor data come as JSON ``data`` or,
with Triton's binary tensor extension, after a JSON header of ``Inference-Header-Content-
Length`` bytes (BYTES elements there are 4-byte little-endian length + bytes; in JSON they
are base64 strings). Every problem with a request raises :class:`BadRequest` (a 400).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

from ..export import INPUT_NAME, OUTPUT_NAMES
from ..results import top_k
from ..runtime.images import decode_image, resize_to
from ..runtime.preprocess import Preprocess

# The server takes the input and gives the outputs of an exported model.onnx, so that a
# client of that file works against it; the first output (the probabilities) is the one
# answered when a request names none.
OUTPUT_NAME = OUTPUT_NAMES[0]
HEADER_LENGTH = "inference-header-content-length"


class HTTPError(Exception):
    """An answer for the client: ``{"error": message}`` with ``status``."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(HTTPError):
    status = 400


@dataclass
class OutputSpec:
    name: str
    classification: int  # top-K "score:index:label" strings; 0 for the tensor itself
    binary: bool


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON request and the binary tensor data after it."""
    if header_length is None:
        head, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 <= n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body "
                             f"({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    try:
        req = json.loads(head)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise BadRequest("the request is not valid JSON") from None
    if not isinstance(req, dict):
        raise BadRequest("the request must be a JSON object with 'inputs'")
    return req, binary


def decode_each(files: list[bytes], pre: Preprocess, max_pixels: int,
                names: list[str] | None = None) -> list[np.ndarray | str]:
    """Per encoded image file: uint8 (C, S, S) with the run's conversion and resize rule, or
    the reason it cannot be read (``"NAME: reason"``). The pixel count is checked from the
    header first, so a bomb is refused in microseconds."""
    out: list[np.ndarray | str] = []
    for i, data in enumerate(files):
        name = names[i] if names else f"image {i}"
        try:
            img = decode_image(data, pre.channels, max_pixels=max_pixels)
            out.append(resize_to(img, pre.image_size, pre.resize).numpy())
        except Exception as e:  # ImageDecodeError, or anything else a crafted file provokes
            out.append(f"{name}: {str(e).replace('<bytes>: ', '')}")
    return out


def decode_files(files: list[bytes], pre: Preprocess, max_pixels: int,
                 names: list[str] | None = None) -> np.ndarray:
    """Encoded image files -> uint8 (N, C, S, S); BadRequest naming the first file that
    cannot be read (a tensor input is answered whole or not at all)."""
    out = []
    for item in decode_each(files, pre, max_pixels, names):
        if isinstance(item, str):
            raise BadRequest(item)
        out.append(item)
    return np.stack(out)


def _shape(t: dict) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise BadRequest("input 'shape' must be a list of non-negative integers")
    if math.prod(shape) == 0:
        raise BadRequest(f"input shape {shape} holds no data")
    return shape


def _bytes_elements(t: dict, raw: bytes | None, shape: list[int]) -> list[bytes]:
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"a BYTES input has shape [N] or [N, 1] (one image file per "
                         f"element), got {shape}")
    n = shape[0]
    if raw is not None:
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise BadRequest("BYTES binary data end inside an element's length prefix")
            size = int.from_bytes(raw[pos:pos + 4], "little")
            if pos + 4 + size > len(raw):
                raise BadRequest("a BYTES element is longer than the binary data")
            items.append(raw[pos + 4:pos + 4 + size])
            pos += 4 + size
    else:
        data = t.get("data")
        if isinstance(data, list) and all(isinstance(d, list) and len(d) == 1 for d in data):
            data = [d[0] for d in data]  # nested [N, 1]
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise BadRequest("BYTES data in JSON must be a list of base64 strings (or send "
                             "them as binary data)")
        try:
            items = [base64.b64decode(d, validate=True) for d in data]
        except (binascii.Error, ValueError):
            raise BadRequest("BYTES data in JSON must be base64-encoded image files") from None
    if len(items) != n:
        raise BadRequest(f"shape {shape} says {n} image file(s), the data hold {len(items)}")
    return items


def _pixel_tensor(t: dict, raw: bytes | None, shape: list[int], datatype: str,
                  pre: Preprocess) -> np.ndarray:
    c, s = pre.channels, pre.image_size
    if len(shape) != 4 or tuple(shape[1:]) not in ((c, s, s), (s, s, c)):
        raise BadRequest(f"input shape {shape} does not fit the model: expected [N,{c},{s},"
                         f"{s}] or [N,{s},{s},{c}] (send encoded image files as BYTES to "
                         "have them resized)")
    count = math.prod(shape)
    if raw is not None:
        dtype = np.dtype(np.uint8 if datatype == "UINT8" else "<f4")
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"{len(raw)} bytes of binary data do not hold a {datatype} "
                             f"tensor of shape {shape} ({count * dtype.itemsize} bytes)")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        data = t.get("data")
        if not isinstance(data, list):
            raise BadRequest("input 'data' must be a list of numbers (flat or nested)")
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError, RecursionError):
            raise BadRequest("input 'data' is not a regular array of numbers") from None
        allowed = "iu" if datatype == "UINT8" else "iuf"
        if arr.dtype.kind not in allowed:
            what = "integers" if datatype == "UINT8" else "numbers"
            raise BadRequest(f"{datatype} data must be {what}, got {arr.dtype.kind!r} values")
        if arr.size != count:
            raise BadRequest(f"shape {shape} needs {count} values, the data hold {arr.size}")
    arr = arr.reshape(shape)
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
            raise BadRequest(f"{datatype} pixel values must lie in 0..255")
        arr = np.rint(arr).astype(np.uint8)  # the exported model takes uint8 pixels
    if tuple(shape[1:]) != (c, s, s):
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr)


def input_datatype(req: dict) -> object:
    """The first input's datatype when the request is well formed enough to say."""
    inputs = req.get("inputs")
    ok = isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)
    return inputs[0].get("datatype") if ok else None


def parse_inputs(req: dict, binary: bytes, pre: Preprocess, max_pixels: int) -> np.ndarray:
    """The request's one input as uint8 images (N, C, S, S)."""
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must be a list holding one tensor named '{INPUT_NAME}'")
    t = inputs[0]
    if t.get("name") != INPUT_NAME:
        raise BadRequest(f"unknown input {t.get('name')!r}; the model's input is "
                         f"'{INPUT_NAME}'")
    datatype, shape = t.get("datatype"), _shape(t)
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("input 'parameters' must be an object")
    raw = None
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not _is_int(size) or size != len(binary):
            raise BadRequest(f"binary_data_size {size!r} does not match the {len(binary)} "
                             "bytes after the JSON header")
        raw = binary
    elif binary:
        raise BadRequest("binary data follow the JSON header but no input declares "
                         "binary_data_size")
    if datatype == "BYTES":
        return decode_files(_bytes_elements(t, raw, shape), pre, max_pixels)
    if datatype in ("UINT8", "FP32"):
        return _pixel_tensor(t, raw, shape, datatype, pre)
    raise BadRequest(f"datatype {datatype!r} is not accepted: use UINT8 or FP32 (pixel "
                     "values 0..255) or BYTES (encoded image files)")


def _classification(params: dict, default: int, where: str) -> int:
    k = params.get("classification", default)
    if not _is_int(k) or k < 0:
        raise BadRequest(f"{where} 'classification' must be a non-negative integer")
    return k


def parse_outputs(req: dict, names: tuple[str, ...] = OUTPUT_NAMES) -> list[OutputSpec]:
    """Requested outputs among ``names``; the probabilities when none are named. The
    request's ``parameters`` (``classification``, ``binary_data_output``) apply to every
    output; an output's own ``parameters`` (``classification``, ``binary_data``) win over
    them."""
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("request 'parameters' must be an object")
    binary_all = params.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise BadRequest("request parameter 'binary_data_output' must be a bool")
    k_all = _classification(params, 0, "request parameter")
    outputs = req.get("outputs")
    if outputs is None:
        return [OutputSpec(OUTPUT_NAME, k_all, binary_all)]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise BadRequest("'outputs' must be a list of objects")
    specs = []
    for o in outputs:
        name = o.get("name")
        if name not in names:
            raise BadRequest(f"unknown output {name!r}; the model's outputs are "
                             f"{', '.join(map(repr, names))}")
        p = o.get("parameters") or {}
        if not isinstance(p, dict):
            raise BadRequest("output 'parameters' must be an object")
        binary = p.get("binary_data", binary_all)
        if not isinstance(binary, bool):
            raise BadRequest("output parameter 'binary_data' must be a bool")
        specs.append(OutputSpec(name, _classification(p, k_all, "output parameter"), binary))
    return specs


def encode_response(model: str, req: dict, results: dict[str, np.ndarray],
                    specs: list[OutputSpec], labels: list[str]) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length;
    ``results`` holds each output's (N, classes) array by name (a classification output
    ranks the classes by that output's values, as Triton does)."""
    outputs, blobs = [], []
    for spec in specs:
        values = results[spec.name]
        n, classes = values.shape
        if spec.classification:
            k = min(spec.classification, classes)
            idx = top_k(values, k)
            strings = [f"{values[i, j]:f}:{j}:{labels[j] if j < len(labels) else j}"
                       for i in range(n) for j in idx[i]]
            out = {"name": spec.name, "datatype": "BYTES", "shape": [n, k]}
            blob = (b"".join(len(b).to_bytes(4, "little") + b
                             for b in (s.encode() for s in strings)) if spec.binary else None)
            data: list = strings
        else:
            out = {"name": spec.name, "datatype": "FP32", "shape": [n, classes]}
            blob = values.astype("<f4").tobytes() if spec.binary else None
            data = values.astype(np.float32).ravel().tolist()
        if blob is None:
            out["data"] = data
        else:
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        outputs.append(out)
    resp = {"model_name": model, "model_version": "1", "outputs": outputs}
    if isinstance(req.get("id"), str):
        resp["id"] = req["id"]
    head = json.dumps(resp).encode()
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)
