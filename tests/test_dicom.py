"""DICOM in: frames, the modality LUT, windows, decoders, what is not an image, and what leaves a header."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from radpipe import dicom
from radpipe.config import load_config
from radpipe.errors import ConfigError
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import ImageError, Preprocessing, decode, is_image_file, to_model_input

from conftest import SAMPLE
from dicom_samples import ct_from_png, ct_volume, pydicom_file, report_object, unsupported_syntax
from phi import MARKER, fake_phi, find_phi

LUNG = dicom.parse_windows("lung")
PRE = Preprocessing(image_size=64, windows=LUNG)
NORMAL = sorted((SAMPLE / "train" / "normal").glob("*.png"))


def test_named_and_explicit_windows() -> None:
    assert dicom.parse_window("lung") == dicom.Window(-600, 1500, "lung")
    assert dicom.parse_window("Mediastinum") == dicom.Window(40, 400, "mediastinum")
    assert dicom.parse_window("bone") == dicom.Window(400, 1800, "bone")
    assert dicom.parse_window(" -600/1500 ") == dicom.Window(-600, 1500)
    assert [str(w) for w in dicom.parse_windows(["lung", "40/400", "bone"])] == [
        "lung (-600/1500)",
        "40/400",
        "bone (400/1800)",
    ]
    for bad, message in (("lungs", "unknown window 'lungs'"), ("40/0", "at least 1 unit"), ("40", "unknown window")):
        with pytest.raises(ValueError, match=message):
            dicom.parse_window(bad)
    with pytest.raises(ValueError, match=r"one window .* or three"):
        dicom.parse_windows(["lung", "bone"])


def test_window_is_dicoms_linear_function() -> None:
    hu = np.array([[-2000.0, -1350.0, -600.5, 149.0, 3000.0]])
    grey = dicom.window_to_uint8(hu, LUNG[0])
    assert grey.tolist() == [[0, 0, 128, 255, 255]]
    rgb = dicom.apply_windows(hu, dicom.parse_windows(["lung", "mediastinum", "bone"]))
    assert rgb.shape == (1, 5, 3) and rgb[0, 2].tolist() == [128, 0, 0]  # -600 HU: mid-grey in lung, black else
    assert (dicom.apply_windows(hu, LUNG, invert=True) == 255 - dicom.apply_windows(hu, LUNG)).all()


def test_pydicoms_ct_slice_goes_through_the_modality_lut_then_the_window() -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    piece = dicom.read_slice(ds)
    expected_hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert (piece.pixels == expected_hu).all() and piece.intercept == -1024.0 and piece.frames == 1
    lung = to_model_input(path, PRE)
    manual = Image.fromarray(dicom.apply_windows(expected_hu, LUNG), "RGB").resize((64, 64), Image.Resampling.BILINEAR)
    assert (lung == np.asarray(manual)).all()
    bone = to_model_input(path, Preprocessing(image_size=64, windows=dicom.parse_windows("bone")))
    assert not (bone == lung).all()
    three = to_model_input(
        path, Preprocessing(image_size=64, windows=dicom.parse_windows(["lung", "mediastinum", "bone"]))
    )
    assert (three[..., 0] == lung[..., 0]).all() and (three[..., 2] == bone[..., 0]).all()
    assert (to_model_input(path.read_bytes(), PRE) == lung).all()  # bytes, as a request brings them


def test_a_ct_slice_written_from_a_png_windows_back_to_the_png(tmp_path: Path) -> None:
    png = NORMAL[0]
    plain = ct_from_png(png, tmp_path / "plain.dcm")
    rescaled = ct_from_png(png, tmp_path / "rescaled.dcm", slope=0.5, intercept=-2048.0)
    expected = to_model_input(png, PRE)
    assert np.abs(to_model_input(plain, PRE).astype(int) - expected).max() == 0
    assert np.abs(to_model_input(rescaled, PRE).astype(int) - expected).max() <= 1  # half-HU steps
    assert int(pydicom.dcmread(plain).pixel_array.min()) < 0 <= int(pydicom.dcmread(rescaled).pixel_array.min())


def test_multi_frame_file_gives_its_middle_frame(tmp_path: Path) -> None:
    volume = ct_volume(NORMAL[:5], tmp_path / "volume.dcm")
    ds = pydicom.dcmread(volume)
    assert ds.NumberOfFrames == 5 and "RescaleIntercept" not in ds  # rescale in the functional groups
    piece = dicom.read_slice(ds)
    assert (piece.frames, piece.frame, piece.intercept) == (5, 2, -1024.0)
    size = Image.open(NORMAL[0]).size
    middle = Image.open(NORMAL[2]).convert("L").resize(size, Image.Resampling.BILINEAR)
    single = ct_from_png(NORMAL[2], tmp_path / "middle.dcm")
    assert np.abs(to_model_input(volume, PRE).astype(int) - to_model_input(middle, PRE)).max() <= 1
    assert not (to_model_input(volume, PRE) == to_model_input(NORMAL[0], PRE)).all()
    assert to_model_input(single, PRE).shape == (64, 64, 3)
    # Colour: pydicom's two-frame RGB file gives its second frame, as RGB.
    rgb = pydicom_file("SC_rgb_rle_2frame.dcm")
    second = pydicom.dcmread(rgb).pixel_array[1]
    assert (np.asarray(decode(rgb, PRE)) == second).all()


@pytest.mark.parametrize(
    "compressed", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_lossless_transfer_syntaxes_decode_to_the_uncompressed_pixels(compressed: str) -> None:
    window = Preprocessing(image_size=64, windows=(dicom.Window(1100, 2200),))  # MR values, not HU
    assert (
        to_model_input(pydicom_file(compressed), window) == to_model_input(pydicom_file("MR_small.dcm"), window)
    ).all()


def test_lossy_jpeg_and_palette_and_deflate_files_decode() -> None:
    for name in ("JPGExtended.dcm", "JPEG2000.dcm", "examples_palette.dcm", "image_dfl.dcm", "examples_ybr_color.dcm"):
        array = to_model_input(pydicom_file(name), PRE)
        assert array.shape == (64, 64, 3) and array.std() > 0, name


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    normal = to_model_input(pydicom_file("CT_small.dcm"), PRE).astype(int)
    assert np.abs(to_model_input(tmp_path / "m1.dcm", PRE) - (255 - normal)).max() <= 1


def test_what_is_not_an_image_says_so_and_names_no_header_value(tmp_path: Path) -> None:
    cases = {
        report_object(tmp_path / "report.dcm", {"PatientName": "Secret^Person"}): "Comprehensive SR Storage",
        pydicom_file("rtstruct.dcm"): "RT Structure Set Storage",  # a bare data set, no preamble
        pydicom_file("rtdose.dcm"): "RT Dose Storage",  # pixel data, but a dose grid, not an image
        pydicom_file("waveform_ecg.dcm"): "ECG Waveform Storage",
    }
    for path, kind in cases.items():
        with pytest.raises(ImageError, match=f"{kind} .*not an image") as info:
            to_model_input(path, PRE)
        assert str(path) in str(info.value) and "Secret" not in str(info.value)


def test_unsupported_and_damaged_pixel_data_say_what_to_do(tmp_path: Path) -> None:
    mpeg = unsupported_syntax(NORMAL[0], tmp_path / "video.dcm", {"PatientName": "Secret^Person"})
    with pytest.raises(ImageError, match=r"compressed as MPEG2 .* no installed decoder reads .* uncompressed") as info:
        to_model_input(mpeg, PRE)
    assert "Secret" not in str(info.value)
    with pytest.raises(ImageError, match="installed decoders fail to read"):
        to_model_input(pydicom_file("JPEG-lossy.dcm"), PRE)  # a known-bad stream in pydicom's test files
    with pytest.raises(ImageError, match="truncated or damaged"):
        to_model_input(pydicom_file("MR_truncated.dcm"), PRE)
    cut = pydicom_file("CT_small.dcm").read_bytes()[:1000]
    with pytest.raises(ImageError, match=r"no pixel data \(CT Image Storage .*, modality CT\): the file is truncated"):
        to_model_input(cut, PRE)
    with pytest.raises(ImageError, match="not a readable image"):
        to_model_input(pydicom_file("no_meta.dcm").read_bytes(), PRE)  # bytes are DICOM only with the preamble


def test_a_slice_over_the_decoding_limit_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128 - 1)
    with pytest.raises(ImageError, match=r"is 128x128 pixels, more than radpipe decodes \(16383 pixels"):
        to_model_input(pydicom_file("CT_small.dcm"), PRE)


def test_dicom_files_are_found_by_extension_or_preamble(tmp_path: Path) -> None:
    bare = ct_from_png(NORMAL[0], tmp_path / "1.2.840.113619.2.55.3.2831")  # named by UID, no extension
    other = tmp_path / "notes"
    other.write_text("not an image")
    assert is_image_file(bare) and is_image_file(tmp_path / "x.dcm") and is_image_file(tmp_path / "x.PNG")
    assert not is_image_file(other) and not is_image_file(tmp_path / ".hidden.dcm")
    assert dicom.header_size(bare.read_bytes()) == Image.open(NORMAL[0]).size


def test_deidentified_copy_keeps_pixels_and_technical_tags_only(tmp_path: Path) -> None:
    source = ct_from_png(
        NORMAL[1],
        tmp_path / "ct.dcm",
        patient_id="PID-7",
        header={"PatientName": "Secret^Person", "InstitutionName": "Secret Hospital", "StudyDate": "20240101"},
    )
    ds = pydicom.dcmread(source)
    piece = dicom.read_slice(ds)
    copy = dicom.deidentified_copy(ds, piece)
    assert copy == dicom.deidentified_copy(pydicom.dcmread(source), piece)  # same slice, same bytes
    out = pydicom.dcmread(io.BytesIO(copy))
    kept = {e.keyword for e in out}
    assert kept <= set(dicom.TECHNICAL_TAGS) | set(dicom.PIXEL_TAGS) | {
        "PixelData",
        "SOPClassUID",
        "SOPInstanceUID",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
    }
    for secret in (
        b"Secret",
        b"PID-7",
        b"20240101",
        str(ds.StudyInstanceUID).encode(),
        str(ds.SOPInstanceUID).encode(),
    ):
        assert secret not in copy
    assert (to_model_input(copy, PRE) == to_model_input(source, PRE)).all()
    tags = dicom.describe(ds, piece)
    assert tags["modality"] == "CT" and tags["pixel_spacing"] == [0.703125, 0.703125] and tags["kvp"] == 120.0
    assert tags["manufacturer_model"] == "radpipe demo scanner" and tags["window_center"] == -600.0
    assert tags["sop_class"] == "CT Image Storage" and tags["frames"] == 1


def test_group_key_is_a_salted_hash_of_patient_else_study() -> None:
    ds = pydicom.Dataset()
    ds.PatientID, ds.StudyInstanceUID = "PID-7", "1.2.3.4"
    key = dicom.group_key(ds, b"salt")
    assert key.startswith("patient:") and "PID-7" not in key and len(key) == len("patient:") + 24
    assert key == dicom.group_key(ds, b"salt") != dicom.group_key(ds, b"pepper")
    ds.PatientID = ""
    assert dicom.group_key(ds, b"salt").startswith("study:")
    del ds.StudyInstanceUID
    assert dicom.group_key(ds, b"salt") is None


def test_windows_are_part_of_the_record_and_old_records_still_load() -> None:
    record = Preprocessing(image_size=64, windows=dicom.parse_windows(["lung", "40/400", "bone"]))
    data = record.to_dict()
    assert data["windows"][1] == {"name": "", "center": 40.0, "width": 400.0} and data["frame"] == "middle"
    assert Preprocessing.from_dict(data) == record
    old = {"image_size": 64, "color_mode": "RGB", "resize": "bilinear", "dtype": "float32", "version": 1}
    loaded = Preprocessing.from_dict(old)
    assert loaded.windows == () and loaded.image_size == 64
    spec = ModelSpec.from_dict(
        {
            "format": "radpipe-model/v1",
            "class_names": ["a", "b"],
            "preprocessing": old,
            "backbone": "x",
            "weights": "none",
        }
    )
    with pytest.raises(ImageError, match=r"record has no DICOM window .* send PNG or JPEG exports, or retrain"):
        to_model_input(pydicom_file("CT_small.dcm"), spec.preprocessing)
    assert to_model_input(NORMAL[0], spec.preprocessing).shape == (64, 64, 3)  # PNG input is unaffected
    with pytest.raises(ValueError, match="unsupported preprocessing record"):
        Preprocessing.from_dict({**data, "frame": "all"})


def test_window_config_is_validated_with_the_key() -> None:
    assert load_config(None, ["model.window=[lung, mediastinum, bone]"]).model.window == ["lung", "mediastinum", "bone"]
    assert load_config(None, ["model.window=-600/1500"]).model.window == "-600/1500"
    with pytest.raises(ConfigError, match=r"config key 'model\.window': unknown window 'lungs'"):
        load_config(None, ["model.window=lungs"])


def test_the_phi_search_finds_values_as_they_would_leak(tmp_path: Path) -> None:
    """tests/test_dicom_phi.py trusts this search: it must find a leaked value and not a look-alike."""
    fake = fake_phi(0)
    date, age = next(t for t in fake.tokens if len(t) == 8 and t.isdigit()), fake.short[0]
    (tmp_path / "run.json").write_text(json.dumps({"when": date, "age": age}))
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": float(f"0.{date}1")}))  # digits inside a number
    (tmp_path / "weights.bin").write_bytes(b"\xff\x38" + date.encode() + b"\x38" + age.encode() + b"\x01")
    found = find_phi([tmp_path], [fake], texts=[("log", f"patient {fake.header['PatientName']} done")])
    run, weights = tmp_path / "run.json", tmp_path / "weights.bin"
    expected = [f"{run}: {date}", f"{run}: {age}", f"{weights}: {date}", f"log: {MARKER}..."]
    assert sorted(found) == sorted(expected)


def test_a_modality_lut_sequence_replaces_the_rescale(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = ct_from_png(NORMAL[0], tmp_path / "lut.dcm", intercept=-1350.0)  # stored = HU + 1350: 0..1499
    ds = pydicom.dcmread(path)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    lut = Dataset()
    lut.LUTDescriptor, lut.ModalityLUTType = [1500, 0, 16], "HU"
    lut.add_new(0x00283006, "US", list(range(1500)))  # LUT Data, an identity table: output = stored value
    ds.ModalityLUTSequence = Sequence([lut])
    ds.save_as(path)
    piece = dicom.read_slice(pydicom.dcmread(path))
    assert (piece.pixels == pydicom.dcmread(path).pixel_array).all() and piece.slope == 1.0
    shifted = Preprocessing(image_size=64, windows=(dicom.Window(-600 + 1350, 1500),))
    assert (to_model_input(path, shifted) == to_model_input(NORMAL[0], PRE)).all()
