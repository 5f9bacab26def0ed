"""DICOM in: reading a slice, the modality LUT, windowing, and the little that may leave a header.

:mod:`radpipe.preprocessing` calls :func:`to_rgb_image` for every DICOM file or request, so ingest, train,
evaluate, ``radpipe predict``, ``radpipe serve`` and the report see a DICOM slice the same way:

1. **Frame**: the middle frame of a multi-frame file (frame ``n // 2``, 0-based), the only one of a
   single-frame file. One file is one image and one prediction everywhere; radpipe classifies 2D images,
   not volumes.
2. **Modality LUT**: stored values to modality units (Hounsfield units for CT) by Rescale Slope and
   Intercept (per frame for enhanced multi-frame files), or by a Modality LUT Sequence.
3. **Windowing** (VOI): each :class:`Window` maps ``centre ± width / 2`` onto 0..255 with DICOM's linear
   function (PS3.3 C.11.2.1.2.1); one window is grey, three windows are the red, green and blue channels.
   MONOCHROME1 (bright is low) is inverted after windowing. Colour files (RGB, YBR, palette) are used as
   their colours, without windowing.

The windows are part of the model's :class:`~radpipe.preprocessing.Preprocessing` record (``model.window``).

**What leaves a header**: :data:`TECHNICAL_TAGS` (recorded per file in the data set manifest) and nothing
else. Ingest writes a de-identified copy (:func:`deidentified_copy`) holding the chosen frame's pixels,
the tags needed to read them and the technical tags; the patient or study that groups files is stored
only as a salted hash (:func:`group_key`). Error messages name standard names (SOP class, transfer
syntax, photometric interpretation), never a header value.

pydicom is imported inside the functions that need it: :mod:`radpipe.config` validates window settings
with this module, and that must not cost every radpipe command the pydicom import.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
MAGIC_OFFSET = 128
MAGIC = b"DICM"
FRAME_POLICY = "middle"
"""The one frame policy: the middle frame of a multi-frame file (``n // 2``)."""

NAMED_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""Named windows, (centre, width) in Hounsfield units."""

TECHNICAL_TAGS: dict[str, str] = {
    "Modality": "modality",
    "PixelSpacing": "pixel_spacing",
    "SliceThickness": "slice_thickness",
    "ManufacturerModelName": "manufacturer_model",
    "KVP": "kvp",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
}
"""The allow-list: header values (DICOM keyword -> manifest name) that may reach the manifest, MLflow,
the model card and the logs. Besides these, only what describes the pixels themselves is kept (rows,
columns, bits, photometric interpretation, rescale, frames) and the names of the SOP class and transfer
syntax."""

PIXEL_TAGS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
)
"""Tags a de-identified copy keeps so that its pixels read as the original's chosen frame."""

SALT_ENV = "RADPIPE_GROUP_SALT"
"""A secret that makes the hashed group keys of two ingest runs comparable; without it each run draws a
random salt that is never written anywhere."""

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class DicomError(ValueError):
    """A DICOM file radpipe cannot use as an image. The message is a predicate to put after the file's name
    ("is not an image; ...", "has pixel data compressed as ..."): it says why and names no header value."""


class NotAnImageError(DicomError):
    """A valid DICOM object that is not an image (a report, an RT plan or dose, a waveform, ...)."""


# -------------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A VOI window: ``center`` and ``width`` in modality units (HU for CT); ``name`` if it is a named one."""

    center: float
    width: float
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "center": self.center, "width": self.width}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Window:
        return cls(center=float(data["center"]), width=float(data["width"]), name=str(data.get("name", "")))

    def __str__(self) -> str:
        values = f"{self.center:g}/{self.width:g}"
        return f"{self.name} ({values})" if self.name else values


def parse_window(text: str) -> Window:
    """``lung``, ``mediastinum``, ``bone`` or ``CENTRE/WIDTH`` (``-600/1500``) -> a :class:`Window`."""
    spec = str(text).strip()
    if spec.lower() in NAMED_WINDOWS:
        center, width = NAMED_WINDOWS[spec.lower()]
        return Window(center, width, spec.lower())
    center_text, sep, width_text = spec.partition("/")
    try:
        center, width = float(center_text), float(width_text)
    except ValueError:
        center, width, sep = 0.0, 0.0, ""
    if not sep:
        raise ValueError(
            f"unknown window {spec!r}: use {', '.join(NAMED_WINDOWS)} or CENTRE/WIDTH in modality units, "
            "e.g. '-600/1500'"
        )
    if not width >= 1.0:
        raise ValueError(f"window {spec!r} has width {width:g}; a window is at least 1 unit wide")
    return Window(center, width)


def parse_windows(spec: str | Sequence[str]) -> tuple[Window, ...]:
    """One window (grey) or three (the red, green and blue channels), from a name/string or a list of them."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if len(items) not in (1, 3):
        raise ValueError(f"give one window (grey) or three (one per colour channel), not {len(items)}")
    return tuple(parse_window(item) for item in items)


def window_to_uint8(values: np.ndarray, window: Window) -> np.ndarray:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255."""
    c, w = window.center, window.width
    scaled = ((values - (c - 0.5)) / max(w - 1.0, 1e-9) + 0.5) * 255.0  # width 1: a step at the centre
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def apply_windows(values: np.ndarray, windows: Sequence[Window], invert: bool = False) -> np.ndarray:
    """Modality values (rows, columns) -> RGB uint8 (rows, columns, 3): one window grey, three as channels."""
    channels = [window_to_uint8(values, w) for w in windows]
    if invert:
        channels = [255 - c for c in channels]
    return np.stack(channels * 3 if len(channels) == 1 else channels, axis=-1)


# ---------------------------------------------------------------------------------------------- files


def looks_like_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == MAGIC


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or any file whose bytes start like one (exports often have no extension)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return looks_like_dicom(fh.read(MAGIC_OFFSET + 4))
    except OSError:
        return False


@functools.cache
def _pydicom() -> Any:
    """pydicom, set not to validate values on reading and with its logger quiet: its warnings and log
    records can quote header values (PHI) into radpipe's logs, and radpipe reports each file's problem
    itself (in the ingest report, the request's error)."""
    import pydicom
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    return pydicom


def read_dataset(source: bytes | str | Path, stop_before_pixels: bool = False) -> Any:
    """The pydicom Dataset of a file or bytes; :class:`DicomError` if it is not a DICOM file."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    # A .dcm file without the preamble (a bare data set, as some old tools write) is read anyway; bytes
    # and files without the extension are DICOM only with it.
    bare = not isinstance(source, bytes) and Path(source).suffix.lower() in DICOM_EXTENSIONS
    try:
        ds = pydicom.dcmread(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            stop_before_pixels=stop_before_pixels,
            force=bare,
        )
    except InvalidDicomError:
        raise DicomError("is not a DICOM file (no 'DICM' after the 128-byte preamble)") from None
    except Exception as exc:  # a truncated or corrupt file: pydicom's own exceptions vary
        raise DicomError(f"is a damaged DICOM file ({type(exc).__name__} while reading its header)") from None
    if bare and not (ds.get("SOPClassUID") or "PixelData" in ds or ds.get("Rows")):
        raise DicomError("is not a DICOM image (no 'DICM' preamble, and no SOP class or pixel data in it)")
    if getattr(ds, "file_meta", None) is None:
        from pydicom.dataset import FileMetaDataset

        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:  # a bare data set: how pydicom read it
        ds.file_meta.TransferSyntaxUID = _guess_syntax(ds)
    return ds


def _guess_syntax(ds: Any) -> Any:
    """What a bare data set was read as (pydicom guessed it from the first bytes)."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if ds.is_little_endian is False:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian


def _name(uid: Any) -> str:
    return f"{uid.name} ({uid})" if uid and getattr(uid, "name", "") != str(uid) else str(uid or "unknown")


def frame_count(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def check_sop_class(ds: Any) -> None:
    """Refuse, by its SOP class, what is not an image (structured reports, RT plans and doses, waveforms,
    segmentations); the header alone tells."""
    sop = ds.get("SOPClassUID")
    modality = str(ds.get("Modality", "") or "unknown")
    if sop is not None and "Image Storage" not in str(getattr(sop, "name", "")):
        raise NotAnImageError(
            f"is a DICOM {_name(sop)} object (modality {modality}), not an image; radpipe classifies images: "
            "keep only image files in the class folders"
        )


def check_is_image(ds: Any) -> None:
    """An image SOP class (:func:`check_sop_class`) with pixel data."""
    check_sop_class(ds)
    sop = ds.get("SOPClassUID")
    modality = str(ds.get("Modality", "") or "unknown")
    if "PixelData" not in ds:
        raise DicomError(
            f"has no pixel data ({_name(sop) if sop else 'no SOP class'}, modality {modality}): the file is "
            "truncated, or it is not an image; keep only image files in the class folders"
        )


@dataclass(frozen=True)
class Slice:
    """One frame of a DICOM image, before windowing."""

    pixels: np.ndarray
    """Monochrome: (rows, columns) float64 in modality units. Colour: (rows, columns, 3) uint8 RGB."""
    photometric: str
    frames: int
    frame: int
    stored: np.ndarray
    """The frame's stored values as decoded, before ``slope`` and ``intercept`` (a Modality LUT Sequence's
    output, with slope 1 and intercept 0); what :func:`deidentified_copy` stores."""
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    """Rescale slope and intercept of ``frame``: top level, else per-frame, else shared functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        sequence = ds.get(groups)
        if sequence and len(sequence) > index:
            transform = sequence[index].get("PixelValueTransformationSequence")
            if transform:
                item = transform[0]
                return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return 1.0, 0.0


def _to_uint8(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.asarray(rgb, np.float64) / max(1, (1 << bits) - 1) * 255.0, 0, 255).round().astype(np.uint8)


def read_slice(ds: Any) -> Slice:
    """Decode the policy's frame of an image Dataset and apply the modality LUT; :class:`DicomError` else."""
    from PIL import Image
    from pydicom.pixels import pixel_array

    check_is_image(ds)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    limit = Image.MAX_IMAGE_PIXELS  # the bound Pillow puts on PNG/JPEG (decompression bombs), for DICOM too
    if limit and rows * columns > limit:
        raise DicomError(
            f"is {columns}x{rows} pixels, more than radpipe decodes ({limit} pixels, Pillow's decompression-bomb "
            "limit); downscale it first"
        )
    frames = frame_count(ds)
    frame = frames // 2
    syntax = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    try:
        stored = pixel_array(ds, index=frame if frames > 1 else None)
    except Exception as exc:  # pydicom raises several kinds; its messages may quote decoder output only
        if isinstance(exc, NotImplementedError) or "no pixel data decoder" in str(exc).lower():
            raise DicomError(
                f"has pixel data compressed as {_name(syntax)}, which no installed decoder reads (radpipe "
                "installs pylibjpeg with its libjpeg and openjpeg plugins; pydicom reads RLE and Deflate): "
                "convert the file to an uncompressed transfer syntax (e.g. gdcmconv --raw) or leave it out"
            ) from None
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise DicomError(
                f"has pixel data ({_name(syntax)}) that the installed decoders fail to read "
                f"({type(exc).__name__}): the file may be damaged or use a variant of its compression they do "
                "not support; convert it to an uncompressed transfer syntax or leave it out"
            ) from None
        raise DicomError(
            f"has pixel data that cannot be read ({type(exc).__name__}): the file looks truncated or damaged"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        return _to_slice(ds, stored, photometric, frames, frame)
    except DicomError:
        raise
    except Exception as exc:  # a broken LUT or descriptor: name the problem, not the values
        raise DicomError(f"has {photometric} pixel data radpipe cannot convert ({type(exc).__name__})") from None


def _to_slice(ds: Any, stored: np.ndarray, photometric: str, frames: int, frame: int) -> Slice:
    """Decoded pixels -> modality values (monochrome) or RGB (colour)."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if stored.ndim != 2:
            raise DicomError(f"has a {photometric} frame of shape {stored.shape}; expected rows x columns")
        if "ModalityLUTSequence" in ds:
            values = np.asarray(apply_modality_lut(stored, ds), np.float64)
            return Slice(values, photometric, frames, frame, np.asarray(values, np.int32))
        slope, intercept = _rescale(ds, frame)
        return Slice(stored * slope + intercept, photometric, frames, frame, stored, slope, intercept)
    if photometric == "PALETTE COLOR":
        entry_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        rgb = _to_uint8(apply_color_lut(stored, ds), entry_bits)
        return Slice(rgb, "RGB", frames, frame, rgb)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT") and stored.ndim == 3:
        rgb = _to_uint8(stored, int(ds.get("BitsStored", 8) or 8))  # pydicom converts YBR to RGB while decoding
        return Slice(rgb, "RGB", frames, frame, rgb)
    raise DicomError(
        f"has photometric interpretation {photometric}, which radpipe does not read; MONOCHROME1/2, RGB, YBR and "
        "PALETTE COLOR are read"
    )


def to_rgb_image(source: bytes | str | Path, windows: Sequence[Window]) -> Any:
    """A DICOM file or its bytes as an RGB PIL image: the policy's frame, modality LUT, ``windows``."""
    from PIL import Image

    if not windows:
        raise DicomError(
            "is DICOM, but this model's preprocessing record has no DICOM window (it was trained before radpipe "
            "read DICOM); send PNG or JPEG exports, or retrain it"
        )
    piece = read_slice(read_dataset(source))
    if piece.is_colour:
        return Image.fromarray(piece.pixels, "RGB")
    rgb = apply_windows(piece.pixels, windows, invert=piece.photometric == "MONOCHROME1")
    return Image.fromarray(rgb, "RGB")


def header_size(data: bytes) -> tuple[int, int]:
    """(columns, rows) from the header alone, before any pixel is decoded (serving's size limit)."""
    ds = read_dataset(data, stop_before_pixels=True)
    check_sop_class(ds)
    try:
        return int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError):
        raise DicomError("has no Rows/Columns: not an image") from None


# ---------------------------------------------------------------------------------- what is kept


def _plain(value: Any) -> Any:
    """A header value as JSON: numbers (DS, IS) stay numbers, multi-values become lists, text is text."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def technical_tags(ds: Any) -> dict[str, Any]:
    """The allow-listed technical tags present in ``ds`` (:data:`TECHNICAL_TAGS`), by manifest name."""
    return {
        name: _plain(ds.get(keyword)) for keyword, name in TECHNICAL_TAGS.items() if ds.get(keyword) not in (None, "")
    }


def describe(ds: Any, piece: Slice) -> dict[str, Any]:
    """What the manifest records of a DICOM file: the technical tags and how its pixels were read."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    sop = ds.get("SOPClassUID")
    return {
        **technical_tags(ds),
        "sop_class": str(getattr(sop, "name", "") or "unknown"),
        "transfer_syntax": str(getattr(syntax, "name", "") or "unknown"),
        "photometric": piece.photometric,
        "frames": piece.frames,
        "frame": piece.frame,
    }


def group_salt() -> bytes:
    """``RADPIPE_GROUP_SALT`` if set, else a random salt for this process's ingest (kept in memory only)."""
    secret = os.environ.get(SALT_ENV, "")
    return secret.encode() if secret else secrets.token_bytes(32)


def group_key(ds: Any, salt: bytes) -> str | None:
    """``patient:<hash>`` from PatientID, else ``study:<hash>`` from StudyInstanceUID, else None; the hash is
    an HMAC-SHA256 with ``salt``, so the key cannot be looked up from a list of patient ids."""
    for keyword, kind in (("PatientID", "patient"), ("StudyInstanceUID", "study")):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            digest = hmac.new(salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
            return f"{kind}:{digest[:24]}"
    return None


def deidentified_copy(ds: Any, piece: Slice) -> bytes:
    """A single-frame DICOM file of the chosen frame: pixel data (uncompressed), the tags needed to read it
    and the allow-listed technical tags; nothing else of the original header. Its UIDs are derived from its
    content, so the same slice gives the same bytes."""
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = Dataset()
    for keyword in TECHNICAL_TAGS:
        if ds.get(keyword) not in (None, ""):
            setattr(out, keyword, ds.get(keyword))
    stored = np.ascontiguousarray(piece.stored)
    if piece.is_colour:
        out.SamplesPerPixel, out.PhotometricInterpretation, out.PlanarConfiguration = 3, "RGB", 0
        stored = stored.astype(np.uint8)
    else:
        out.SamplesPerPixel, out.PhotometricInterpretation = 1, piece.photometric
        if stored.dtype.kind == "f" or stored.dtype.itemsize > 2:
            stored = stored.astype(np.int32 if stored.dtype.kind in "if" and stored.min() < 0 else np.uint32)
        elif stored.dtype.itemsize == 1:
            stored = stored.astype(np.int16 if stored.dtype.kind == "i" else np.uint16)
        out.RescaleSlope, out.RescaleIntercept = f"{piece.slope:.10g}", f"{piece.intercept:.10g}"
    bits = stored.dtype.itemsize * 8
    out.Rows, out.Columns = int(stored.shape[0]), int(stored.shape[1])
    out.BitsAllocated, out.BitsStored, out.HighBit = bits, bits, bits - 1
    out.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    out.PixelData = stored.tobytes()
    out["PixelData"].VR = "OW" if bits > 8 else "OB"
    content = hashlib.sha256(out.PixelData + repr(sorted((k, str(out.get(k))) for k in out.dir())).encode())
    uid = generate_uid(entropy_srcs=[content.hexdigest()])
    out.SOPClassUID, out.SOPInstanceUID = SECONDARY_CAPTURE, uid
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "radpipe: allow-list of technical tags; pixel data not inspected"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SECONDARY_CAPTURE, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()
