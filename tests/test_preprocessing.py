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
    assert Preprocessing.from_dict(PRE.to_dict()) == PRE
    with pytest.raises(ValueError, match="unsupported preprocessing record"):
        Preprocessing.from_dict({**PRE.to_dict(), "version": 2})
