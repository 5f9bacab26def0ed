"""The one preprocessing function: every image mode becomes the same RGB uint8 input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from radpipe.preprocessing import ImageError, Preprocessing, batch, open_image, to_model_input

PRE = Preprocessing(image_size=16)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_modes_become_rgb_uint8() -> None:
    for image in (
        Image.new("L", (30, 20), 128),
        Image.new("RGBA", (30, 20), (10, 20, 30, 255)),
        Image.new("P", (30, 20)),
        Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)),
    ):
        array = to_model_input(encode(image), PRE)
        assert array.shape == (16, 16, 3) and array.dtype == np.uint8


def test_transparency_is_composited_on_black() -> None:
    transparent = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    assert to_model_input(encode(transparent), PRE).max() == 0


def test_sixteen_bit_grey_keeps_its_contrast() -> None:
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16).repeat(8, 0).repeat(4, 1))
    array = to_model_input(encode(image), Preprocessing(image_size=8))
    assert array.min() == 0 and array.max() == 255


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert open_image(buffer.getvalue()).size == (10, 40)


def test_not_an_image() -> None:
    with pytest.raises(ImageError, match="not a readable image"):
        to_model_input(b"hello", PRE)


def test_batch_is_float32() -> None:
    x = batch([np.zeros((16, 16, 3), np.uint8)] * 2)
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.float32


def test_record_round_trip() -> None:
    assert Preprocessing.from_dict(PRE.to_dict()) == PRE and PRE.to_dict()["version"] == 1
    with pytest.raises(ValueError, match="unsupported preprocessing record"):
        Preprocessing.from_dict({**PRE.to_dict(), "version": 4})
    # A framing that radpipe before it would ignore is written as version 2, which such a radpipe refuses.
    padded = Preprocessing(image_size=16, framing="trim-pad")
    assert padded.to_dict()["version"] == 2 and Preprocessing.from_dict(padded.to_dict()) == padded
    assert Preprocessing.from_dict({k: v for k, v in PRE.to_dict().items() if k != "framing"}).framing == "stretch"
    with pytest.raises(ValueError, match="unsupported preprocessing record"):
        Preprocessing.from_dict({**PRE.to_dict(), "framing": "crop"})
    # Adjusted grey levels are version 3: a radpipe before them would feed the model unadjusted images.
    stretched = Preprocessing(image_size=16, framing="trim-pad", intensity="autocontrast")
    assert stretched.to_dict()["version"] == 3 and Preprocessing.from_dict(stretched.to_dict()) == stretched
    assert padded.to_dict()["intensity"] == "none"
    assert Preprocessing.from_dict({k: v for k, v in padded.to_dict().items() if k != "intensity"}) == padded
    with pytest.raises(ValueError, match="unsupported preprocessing record"):
        Preprocessing.from_dict({**stretched.to_dict(), "intensity": "equalize"})


def test_autocontrast_gives_one_input_whatever_the_exports_brightness() -> None:
    """The same slice exported darker or brighter becomes (nearly) the same model input; as exported, not."""
    rng = np.random.default_rng(0)
    tissue = rng.integers(40, 200, (20, 40)).astype(np.float64)
    tissue[0, :4] = 255  # a few saturated pixels (a marker): the 1 % cutoff keeps them from setting the white point

    def exported(gain: float) -> bytes:
        image = np.zeros((30, 60), np.uint8)
        image[5:25, 10:50] = np.clip(tissue * gain, 0, 255).round()
        return encode(Image.fromarray(image))

    def model_input(gain: float, intensity: str) -> np.ndarray:
        pre = Preprocessing(image_size=40, framing="trim-pad", intensity=intensity)
        return to_model_input(exported(gain), pre).astype(np.int16)

    dark, bright = model_input(0.6, "autocontrast"), model_input(1.0, "autocontrast")
    assert np.abs(dark - bright).max() <= 3  # rounding of the darker export's fewer grey levels
    assert np.abs(model_input(0.6, "none") - model_input(1.0, "none")).mean() > 20
    # the brightest 1 % (the marker and the brightest tissue) is white, the black padding stays black
    assert bright.max() == 255 and bright[0].max() == 0
    assert np.mean(bright == 255) >= 0.005


def slice_on_black() -> Image.Image:
    """A 60 x 30 "slice": a grey 40 x 20 body inside a black margin of 10 px left and right, 5 top and bottom."""
    image = Image.new("L", (60, 30), 0)
    image.paste(150, (10, 5, 50, 25))
    return image


def content_box(array: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns (first, last) where the body shows (above half its grey level), after resizing."""
    rows, cols = np.flatnonzero((array > 75).any(axis=1)), np.flatnonzero((array > 75).any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_framings() -> None:
    source = encode(slice_on_black())

    def framed(framing: str) -> np.ndarray:
        return to_model_input(source, Preprocessing(image_size=12, framing=framing))[..., 0]

    # stretch: the 2:1 image squeezed into the square, margins and all: the body spans 2/3 of each side.
    assert content_box(framed("stretch")) == (2, 9, 2, 9)
    # pad: aspect kept, 60 x 30 -> 12 x 6 centred in rows 3-8; the margins stay, the body is 8 x 4.
    assert content_box(framed("pad")) == (4, 7, 2, 9)
    # trim-pad: the margin cut away first: the 40 x 20 body -> 12 x 6, the full width.
    assert content_box(framed("trim-pad")) == (3, 8, 0, 11)
    # a dark image whose content is a speck is not cropped to the speck
    speck = Image.new("L", (60, 30), 0)
    speck.putpixel((30, 15), 255)
    assert to_model_input(encode(speck), Preprocessing(image_size=12, framing="trim-pad")).max() > 0
