"""Ingest of DICOM: mixed with PNG, de-identified into the data set, grouped by patient, per-file reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from radpipe.components.ingest import dicom_files
from radpipe.components.ingest.ingest import ingest
from radpipe.config import DataConfig
from radpipe.dataset import load_split, read_manifest
from radpipe.dicom import SALT_ENV, parse_windows
from radpipe.preprocessing import Preprocessing, to_model_input

from conftest import SAMPLE
from dicom_samples import ct_from_png, ct_volume, pydicom_file, report_object, unsupported_syntax

PNGS = {
    "normal": sorted(SAMPLE.glob("*/normal/*.png")),
    "adenocarcinoma": sorted(p for p in SAMPLE.glob("*/adenocarcinoma*/*.png")),
}
SECRET = {"PatientName": "Secret^Person", "InstitutionName": "Secret Hospital", "PatientBirthDate": "19230417"}


def mixed_tree(root: Path) -> Path:
    """Two classes, each half PNG and half DICOM (one file without an extension, one three-frame file), a
    patient with slices in train and test, and three DICOM files that cannot be used."""
    for label, pngs in PNGS.items():
        (root / "train" / label).mkdir(parents=True)
        for i, png in enumerate(pngs[:8]):
            if i % 2:
                shutil.copy(png, root / "train" / label / png.name)
            else:
                name = f"slice{i}" if i == 0 else f"slice{i}.dcm"
                ct_from_png(png, root / "train" / label / name, header=SECRET, patient_id=f"P-{label}-{i}")
        ct_volume(pngs[:3], root / "train" / label / "volume.dcm", header=SECRET)
        for i, png in enumerate(pngs[8:10]):
            ct_from_png(png, root / "test" / label / f"held-out{i}.dcm", header=SECRET, patient_id=f"Q-{label}-{i}")
    # The patient of train/normal/slice2.dcm also in test: that test slice goes.
    ct_from_png(PNGS["adenocarcinoma"][12], root / "test" / "normal" / "same-patient.dcm", patient_id="P-normal-2")
    report_object(root / "test" / "normal" / "report.dcm", SECRET)
    unsupported_syntax(PNGS["normal"][0], root / "test" / "normal" / "video.dcm", SECRET)
    shutil.copy(pydicom_file("rtdose.dcm"), root / "train" / "normal" / "dose.dcm")
    return root


def test_mixed_png_and_dicom_set_is_read_de_identified_and_reported(tmp_path: Path) -> None:
    root = mixed_tree(tmp_path / "data")
    out = tmp_path / "out"
    report = ingest(DataConfig(uri=str(root), near_duplicates=False), out, tmp_path / "work")  # tested elsewhere
    manifest = read_manifest(out)
    files = {f["source"]: f for f in manifest["files"]}
    dicom_entries = [f for f in files.values() if f["format"] == "DICOM"]
    assert {f["format"] for f in files.values()} == {"PNG", "DICOM"}
    assert len(dicom_entries) == 2 * (4 + 1 + 2)  # per class 4 slices and a volume in train (and val), 2 in test
    bare = files["train/normal/slice0"]  # no extension: found by its preamble, stored as .dcm
    assert bare["path"].startswith("train/normal/slice0-") and bare["path"].endswith(".dcm")
    assert bare["dicom"]["modality"] == "CT" and bare["dicom"]["kvp"] == 120.0 and bare["mode"] == "MONOCHROME2"
    volume = files["train/normal/volume.dcm"]["dicom"]
    assert (volume["frames"], volume["frame"]) == (3, 1)
    # What the data set holds is the de-identified copy: no name, institution, birth date or patient id.
    for entry in dicom_entries:
        data = (out / entry["path"]).read_bytes()
        assert b"Secret" not in data and b"19230417" not in data and b"P-normal" not in data
        ds = pydicom.dcmread(out / entry["path"])
        assert ds.PatientIdentityRemoved == "YES" and "PatientID" not in ds
    listed = (out / "manifest.json").read_bytes()
    assert b"Secret" not in listed and b"P-normal" not in listed
    # ... and the model sees it as it would see the original file.
    pre = Preprocessing(image_size=48, windows=parse_windows("lung"))
    assert (to_model_input(out / bare["path"], pre) == to_model_input(root / "train/normal/slice0", pre)).all()
    split = load_split(out, "train", pre)
    assert len(split) == manifest["counts"]["train"]["normal"] + manifest["counts"]["train"]["adenocarcinoma"]
    # Per-file reasons: not an image (SR, RT dose), an unsupported transfer syntax.
    skipped = "\n".join(manifest["report"]["skipped_non_images"])
    assert "test/normal/report.dcm (is a DICOM Comprehensive SR Storage" in skipped
    assert "train/normal/dose.dcm (is a DICOM RT Dose Storage" in skipped
    (unreadable,) = manifest["report"]["unreadable"]
    assert unreadable["path"] == "test/normal/video.dcm" and "compressed as MPEG2" in unreadable["error"]
    assert "Secret" not in json.dumps(manifest)
    # The test slice of a training patient is removed; the patient appears only as a salted hash.
    (same,) = manifest["report"]["removed_same_patient"]
    assert same["removed"] == "test/normal/same-patient.dcm" and same["group"].startswith("patient:")
    assert files["train/normal/slice2.dcm"]["group"] == same["group"]
    assert "P-normal" not in same["group"]
    summary = manifest["report"]["dicom"]
    assert summary["files"] == 14 and summary["modalities"] == {"CT": 14}
    assert summary["grouped_by"] == {"patient": 12, "study": 2}  # the volumes have no PatientID
    assert summary["dicom_by_class"] == {"adenocarcinoma": 7, "normal": 7}
    assert "DICOM files: 14" in report.summary() and "DICOM patient" in manifest["report"]["grouping"]["by"]


def test_made_splits_keep_each_patient_whole_and_the_salt_is_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    for label, pngs in PNGS.items():
        for i, png in enumerate(pngs[:12]):
            patient = f"{label}-{i // 3}"  # four patients per class, three slices each
            ct_from_png(png, root / label / f"s{i}.dcm", patient_id=patient, header=SECRET)
    monkeypatch.delenv(SALT_ENV, raising=False)
    first = ingest(DataConfig(uri=str(root), near_duplicates=False), tmp_path / "a", tmp_path / "wa")
    second = ingest(DataConfig(uri=str(root), near_duplicates=False), tmp_path / "b", tmp_path / "wb")
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert first.created_splits == ["val", "test"]
    spans: dict[str, set[str]] = {}
    for entry in a["files"]:
        spans.setdefault(entry["group"], set()).add(entry["split"])
    assert len(spans) == 8 and all(len(s) == 1 for s in spans.values())  # patients never straddle splits
    for label in PNGS:
        assert a["counts"]["val"][label] == 3 and a["counts"]["test"][label] == 3  # one whole patient each
    # A random salt per run: the groups' hashes differ, the data set (fingerprint, splits) does not.
    assert first.fingerprint == second.fingerprint
    assert {f["group"] for f in a["files"]}.isdisjoint({f["group"] for f in b["files"]})
    # A salt from the environment makes them comparable across runs; it is written nowhere.
    monkeypatch.setenv(SALT_ENV, "a-secret-salt-value")
    ingest(DataConfig(uri=str(root)), tmp_path / "c", tmp_path / "wc")
    ingest(DataConfig(uri=str(root)), tmp_path / "d", tmp_path / "wd")
    c, d = read_manifest(tmp_path / "c"), read_manifest(tmp_path / "d")
    assert [f["group"] for f in c["files"]] == [f["group"] for f in d["files"]]
    for out in ("a", "b", "c", "d"):
        for path in (tmp_path / out).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"a-secret-salt-value" not in data and b"Secret" not in data and b"normal-0" not in data


def test_a_class_of_dicom_against_a_class_of_png_is_flagged() -> None:
    mixed = dicom_files.summarize([("a", "DICOM", {"modality": "CT"}, "patient:x"), ("b", "PNG", None, None)])
    assert "classes a are all DICOM and b have no DICOM" in dicom_files.format_confound(mixed)
    both = dicom_files.summarize(
        [("a", "DICOM", {"modality": "CT"}, None), ("a", "PNG", None, None), ("b", "DICOM", {}, None)]
    )
    assert dicom_files.format_confound(both) == "" and dicom_files.summarize([("a", "PNG", None, None)]) == {}
