"""Write CT-like DICOM files from the bundled PNG sample: the data of ``examples/dicom-demo.yaml``.

    python examples/make_dicom_demo.py [--out examples/dicom-demo-data]

The PNG slices are lung-window renderings, so each grey level is turned back into Hounsfield units by the
inverse of the lung window (-600/1500): a DICOM slice windowed with ``lung`` shows the PNG again. The
values are stored the way CT scanners store them (signed 16-bit, Rescale Slope 1, Rescale Intercept
-1024). Each scan id of each split (the file-name stem ``000109`` of ``000109 (2).png``) becomes a made-up
patient, so the demo shows grouping by patient. (Per split: the sample's normal test slices share scan
``10`` with training slices, and ingest would rightly drop every test image of a patient who is also in
train, leaving the demo no normal test image.) One file per class is written without an extension, as
exports often are, and one as a three-frame Enhanced CT file whose rescale sits in its functional groups.

The tests build their DICOM files with the same functions (``tests/test_dicom*.py``). About 25 MB of DICOM
would have to be committed otherwise; the script takes a few seconds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "chest-ct-sample"
LUNG_CENTER, LUNG_WIDTH = -600.0, 1500.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
DEMO_ROOT = "1.2.826.0.1.3680043.10.1317."  # made-up UIDs under a demo root


def hu_from_png(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A lung-window PNG slice as Hounsfield units (the inverse of the lung window)."""
    grey = Image.open(path).convert("L")
    if size is not None:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float64)
    return pixels / 255.0 * (LUNG_WIDTH - 1) + (LUNG_CENTER - 0.5) - (LUNG_WIDTH - 1) / 2


def ct_dataset(
    hu: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    patient_id: str = "",
    study_uid: str = "",
    header: Mapping[str, Any] | None = None,
    uid: str = "",
) -> Any:
    """A CT image as pydicom writes it: ``hu`` is (rows, columns) or (frames, rows, columns) in HU.

    One frame: CT Image Storage with Rescale Slope/Intercept at the top level. Several frames: Enhanced
    CT Image Storage with the rescale in the shared functional groups. ``header``: more elements by keyword
    (a test's fake patient data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope).astype(np.int16)
    frames = stored.shape[0] if stored.ndim == 3 else 1
    uid = uid or generate_uid(prefix=DEMO_ROOT)
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE if frames > 1 else CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study_uid or generate_uid(prefix=DEMO_ROOT)
    ds.SeriesInstanceUID = generate_uid(prefix=DEMO_ROOT)
    ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.ManufacturerModelName = "radpipe demo scanner"
    ds.KVP = "120"
    ds.SliceThickness = "1.25"
    ds.PixelSpacing = ["0.703125", "0.703125"]
    ds.WindowCenter, ds.WindowWidth = str(int(LUNG_CENTER)), str(int(LUNG_WIDTH))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    if frames > 1:
        ds.NumberOfFrames = frames
        shared = Dataset()
        shared.PixelValueTransformationSequence = DicomSequence([rescale])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    else:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = rescale.RescaleSlope, rescale.RescaleIntercept, "HU"
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write(ds: Any, path: Path) -> Path:
    """Save as a DICOM Part 10 file (preamble, ``DICM``, file meta)."""
    import pydicom

    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


SCAN = re.compile(r"(?P<scan>.+?)(?:\s*\(\d+\)|\s*-\s*Copy)*")


def convert_sample(out: Path, source: Path = SAMPLE) -> list[Path]:
    """The bundled PNG sample as DICOM, same layout; returns the files written."""
    written = []
    for split in sorted(p for p in source.iterdir() if p.is_dir()):
        for folder in sorted(p for p in split.iterdir() if p.is_dir()):
            pngs = sorted(folder.glob("*.png"))
            label = folder.name.split("_")[0]
            for i, png in enumerate(pngs):
                scan = SCAN.fullmatch(png.stem).group("scan")  # type: ignore[union-attr]
                ds = ct_dataset(hu_from_png(png), patient_id=f"DEMO-{split.name}-{label}-{scan}")
                name = png.stem if i == 0 else f"{png.stem}.dcm"  # one per folder without an extension
                written.append(write(ds, out / split.name / folder.name / name))
            if split.name == "train" and len(pngs) >= 3:  # a three-frame file: ingest takes the middle frame
                size = Image.open(pngs[0]).size
                volume = np.stack([hu_from_png(p, size) for p in pngs[:3]])
                ds = ct_dataset(volume, patient_id=f"DEMO-train-{label}-volume")
                written.append(write(ds, out / split.name / folder.name / "volume-3-frames.dcm"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "dicom-demo-data")
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    files = convert_sample(args.out)
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"wrote {len(files)} DICOM files ({size:.1f} MB) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
