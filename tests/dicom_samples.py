"""DICOM files for tests: the CT files pydicom ships, and CT slices written from the bundled PNG sample.

The PNG slices become DICOM through ``examples/make_dicom_demo.py`` (the demo's own script): Hounsfield
units by the inverse of the lung window, stored as CT scanners store them (int16, Rescale Intercept -1024),
so a DICOM slice windowed with ``lung`` is its PNG again.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from conftest import REPO

_spec = importlib.util.spec_from_file_location("make_dicom_demo", REPO / "examples" / "make_dicom_demo.py")
demo = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(demo)  # type: ignore[union-attr]

MPEG2 = "1.2.840.10008.1.2.4.100"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def pydicom_file(name: str) -> Path:
    """One of the test files inside the pydicom package (``CT_small.dcm``, ``test-SR.dcm``, ...)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"{path} is not in this pydicom"
    return path


def _writable() -> None:
    """Fake values need not be valid: write them as given."""
    import pydicom.config

    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


def ct_from_png(
    png: Path,
    target: Path,
    *,
    header: Mapping[str, Any] | None = None,
    patient_id: str = "",
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """A CT slice with ``png``'s picture, in HU, as a DICOM file at ``target``."""
    _writable()
    ds = demo.ct_dataset(demo.hu_from_png(png), slope=slope, intercept=intercept, patient_id=patient_id, header=header)
    return demo.write(ds, target)


def ct_volume(pngs: list[Path], target: Path, *, header: Mapping[str, Any] | None = None) -> Path:
    """An Enhanced CT file with one frame per PNG (all resized to the first one's size)."""
    from PIL import Image

    _writable()
    size = Image.open(pngs[0]).size
    volume = np.stack([demo.hu_from_png(p, size) for p in pngs])
    return demo.write(demo.ct_dataset(volume, header=header), target)


def report_object(target: Path, header: Mapping[str, Any] | None = None) -> Path:
    """A Comprehensive SR document (no pixel data): a DICOM file that is not an image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    _writable()
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = COMPREHENSIVE_SR, generate_uid(), "SR"
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = COMPREHENSIVE_SR, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return demo.write(ds, target)


def unsupported_syntax(png: Path, target: Path, header: Mapping[str, Any] | None = None) -> Path:
    """A CT slice whose pixel data claims MPEG-2 video compression: no radpipe decoder reads it."""
    import pydicom
    from pydicom.encaps import encapsulate

    ct_from_png(png, target, header=header)
    ds = pydicom.dcmread(target)
    ds.file_meta.TransferSyntaxUID = MPEG2
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)
    return target
