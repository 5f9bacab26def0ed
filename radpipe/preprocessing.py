"""The one image preprocessing function, shared by training, evaluation, ``radpipe predict`` and serving.

A model sees images exactly as :func:`to_model_input` makes them, and the :class:`Preprocessing` record
that describes it is saved with every model, so a served model can never drift from how it was trained.
Backbone-specific normalisation (``[-1, 1]`` scaling, BGR mean subtraction, ...) is *inside* the Keras
graph (see ``radpipe.components.prepare_base.backbones``): outside it, every model takes RGB float32
pixels in ``[0, 255]``.

DICOM files and bytes (``.dcm``, or any file with the ``DICM`` preamble) are read by :mod:`radpipe.dicom`
with the windows of the record: the same frame, modality LUT and windows for every caller.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radpipe import dicom

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

ImageSource = str | Path | bytes

FRAMINGS = ("stretch", "pad", "trim-pad")
"""How an image becomes the model's square: ``stretch`` (resized to the square, the aspect ratio lost),
``pad`` (resized to fit inside it, aspect kept, centred on black), ``trim-pad`` (the dark border cut away
first, so the body fills the frame whatever margin the export left, then ``pad``)."""

INTENSITIES = ("none", "autocontrast")
"""What is done to an image's grey levels after framing: ``none`` (kept as exported) or ``autocontrast``
(stretched so its darkest pixel is black and its brightest 1 % white). PNG and JPEG exports of CT carry no
Hounsfield units, and one data set's exports differ in brightness (docs/benchmarks.md, "Grey levels")."""

AUTOCONTRAST_CUTOFF = (0, 1)
"""Percent of the darkest and brightest pixels that ``autocontrast`` clips: none of the dark ones (air and
padding are black already), 1 % of the bright ones, so a few saturated pixels (bone, a marker, burnt-in
text) do not set the white point."""

TRIM_LEVEL = 20
"""Grey level (0-255) above which a row or column counts as content for ``trim-pad``: CT air and export
margins sit near 0, soft tissue and bone far above."""


class ImageError(ValueError):
    """The bytes are not an image we can decode."""


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input; recorded with each model (``radpipe.json``, MLflow metadata)."""

    image_size: int
    color_mode: str = "RGB"
    resize: str = "bilinear"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 255.0)
    version: int = 1
    windows: tuple[dicom.Window, ...] = ()
    """DICOM input: one window (grey) or three (the channels), applied to modality values (HU for CT).
    Empty in records written before radpipe read DICOM: such a model refuses DICOM input."""
    frame: str = dicom.FRAME_POLICY
    """Which frame of a multi-frame DICOM file is the image: ``middle``."""
    framing: str = "stretch"
    """How an image of any shape becomes a square (:data:`FRAMINGS`); records without it stretched."""
    intensity: str = "none"
    """What is done to the framed image's grey levels (:data:`INTENSITIES`); records without it: nothing."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["value_range"] = list(self.value_range)
        data["windows"] = [w.to_dict() for w in self.windows]
        # Each version marks what a radpipe before it would ignore (2: a framing other than stretch, 3: grey
        # levels adjusted): such a radpipe then refuses the model ("upgrade radpipe") instead of feeding it
        # images made another way.
        data["version"] = 3 if self.intensity != "none" else 2 if self.framing != "stretch" else 1
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        if (
            int(data.get("version", 1)) not in (1, 2, 3)
            or data.get("color_mode", "RGB") != "RGB"
            or data.get("frame", dicom.FRAME_POLICY) != dicom.FRAME_POLICY
            or data.get("framing", "stretch") not in FRAMINGS
            or data.get("intensity", "none") not in INTENSITIES
        ):
            raise ValueError(f"unsupported preprocessing record {data}; upgrade radpipe to load this model")
        return cls(
            image_size=int(data["image_size"]),
            color_mode=data.get("color_mode", "RGB"),
            resize=data.get("resize", "bilinear"),
            dtype=data.get("dtype", "float32"),
            value_range=tuple(data.get("value_range", (0.0, 255.0))),  # type: ignore[arg-type]
            windows=tuple(dicom.Window.from_dict(w) for w in data.get("windows", ())),
            frame=data.get("frame", dicom.FRAME_POLICY),
            framing=data.get("framing", "stretch"),
            intensity=data.get("intensity", "none"),
        )


def open_image(source: ImageSource) -> Image.Image:
    """Decode an image file or bytes, with EXIF orientation applied; raise :class:`ImageError` if it isn't one."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        name = "the data" if isinstance(source, bytes) else str(source)
        raise ImageError(f"{name} is not a readable image ({exc.__class__.__name__}: {exc})") from exc
    ImageOps.exif_transpose(image, in_place=True)  # in place keeps .format, which ingest records
    return image


def header_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) from the file's header alone, no pixel decoded: Pillow's lazy open, or the DICOM
    header's Columns and Rows. What a size limit checks before decoding commits the memory."""
    name = "the data" if isinstance(source, bytes) else str(source)
    if is_dicom(source):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        try:
            return dicom.header_size(data)
        except dicom.DicomError as exc:
            raise ImageError(f"{name} {exc}") from None
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as header:
            return header.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name} is not a readable image ({exc.__class__.__name__}: {exc})") from exc


class ImageTooLargeError(ImageError):
    """An image over a pixel limit, refused from its header."""


def check_pixels(source: ImageSource, max_pixels: int, setting: str) -> tuple[int, int]:
    """The image's (width, height), or :class:`ImageTooLargeError` naming the file and ``setting`` (the
    config key or flag that sets ``max_pixels``) if it has more pixels than that; nothing is decoded."""
    width, height = header_size(source)
    if width * height > max_pixels:
        name = "the data" if isinstance(source, bytes) else str(source)
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, more than {setting} allows "
            f"({max_pixels / 1e6:g} megapixels); downscale the image or raise {setting}"
        )
    return width, height


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on black and 16-bit grey scaled to 8 bits (CT exports use both)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def is_dicom(source: ImageSource) -> bool:
    """DICOM bytes (the ``DICM`` preamble) or a DICOM file (``.dcm``, or that preamble)."""
    if isinstance(source, bytes):
        return dicom.looks_like_dicom(source)
    return dicom.is_dicom_file(Path(source))


def decode(source: ImageSource | Image.Image, preprocessing: Preprocessing) -> Image.Image:
    """Any image radpipe reads as a PIL image: DICOM windowed as ``preprocessing`` says, else :func:`open_image`."""
    if isinstance(source, Image.Image):
        return source
    if is_dicom(source):
        try:
            return dicom.to_rgb_image(source, preprocessing.windows)
        except dicom.DicomError as exc:
            name = "the data" if isinstance(source, bytes) else str(source)
            raise ImageError(f"{name} {exc}") from None
    return open_image(source)


def to_model_input(source: ImageSource | Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """One image -> ``(size, size, 3)`` uint8 RGB, resized as the model was trained.

    uint8 keeps a whole data set small in memory; :func:`batch` casts to the model's float32.
    """
    image = to_rgb(decode(source, preprocessing))
    size = preprocessing.image_size
    if preprocessing.framing == "trim-pad":
        image = trim_dark_border(image)
    if preprocessing.intensity == "autocontrast":
        # After the trim, so an export's margin does not count among the pixels that set the white point.
        image = ImageOps.autocontrast(image, cutoff=AUTOCONTRAST_CUTOFF, preserve_tone=True)
    if preprocessing.framing == "stretch" or image.width == image.height:
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    scale = size / max(image.size)
    inner = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
    )
    canvas = Image.new("RGB", (size, size))
    canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def trim_dark_border(image: Image.Image) -> Image.Image:
    """``image`` cropped to the rows and columns with content (above :data:`TRIM_LEVEL`); unchanged when that
    would keep less than a third of either side (a dark image, not a margin)."""
    grey = np.asarray(image.convert("L"))
    rows = np.flatnonzero(grey.max(axis=1) > TRIM_LEVEL)
    cols = np.flatnonzero(grey.max(axis=0) > TRIM_LEVEL)
    if not len(rows) or not len(cols):
        return image
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    if box[2] - box[0] <= image.width / 3 or box[3] - box[1] <= image.height / 3:
        return image
    return image.crop(box) if box != (0, 0, image.width, image.height) else image


def batch(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Stack preprocessed images into the float32 ``(n, size, size, 3)`` tensor a radpipe model takes."""
    return np.asarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images, dtype=np.float32)


def is_image_file(path: Path) -> bool:
    """A raster image by its extension, or a DICOM file (``.dcm``, or the preamble whatever the name)."""
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS or dicom.is_dicom_file(path)
