"""PHI never leaves: DICOM files with a fake value in every attribute of the DICOM basic de-identification
profile go through the whole pipeline (kfp.local, a real MLflow server) and ``radpipe predict``; then the
MLflow database (raw and as SQL), its artifact store, the pipeline root (every KFP output: the data set, the
models, the report, the model card, the serving manifest, executor outputs), the feature cache, the
predictions and the captured logs are searched for every value. Nothing may be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from radpipe import dicom
from radpipe.mlflow_server import MlflowServer

from conftest import SAMPLE
from dicom_samples import ct_from_png, ct_volume, report_object, unsupported_syntax
from phi import BASIC_PROFILE, MARKER, UID_ROOT, FakePhi, add_private_phi, fake_phi, find_phi

pytestmark = pytest.mark.e2e

CLASSES = {"normal": "normal", "adenocarcinoma": "adenocarcinoma*"}
FAST = [
    "model.weights=none",
    "model.image_size=32",
    "model.scales=[1.0]",
    "train.epochs=2",
    "train.fine_tune_layers=0",
    "train.fine_tune_epochs=0",
    "evaluate.bootstrap_samples=100",
    "register.model_name=phi-test",
]


def write_phi_data(root: Path) -> list[FakePhi]:
    """The bundled sample's two classes as DICOM, one fake patient per slice, every header full of PHI; and
    files radpipe cannot use (a report, a video syntax), with PHI too. Returns every patient's values."""
    patients: list[FakePhi] = []

    def next_patient() -> FakePhi:
        patients.append(fake_phi(len(patients)))
        return patients[-1]

    for label, pattern in CLASSES.items():
        for split in ("train", "valid", "test"):
            pngs = sorted((SAMPLE / split).glob(f"{pattern}/*.png"))
            for i, png in enumerate(pngs):
                name = f"{split}-{i}" if i == 0 else f"{split}-{i}.dcm"  # one file without an extension
                path = ct_from_png(png, root / split / label / name, header=next_patient().header)
                ds = pydicom.dcmread(path)
                add_private_phi(ds)
                ds.save_as(path)
        train = sorted((SAMPLE / "train").glob(f"{pattern}/*.png"))
        ct_volume(train[:3], root / "train" / label / "volume.dcm", header=next_patient().header)
    png = sorted((SAMPLE / "test").glob("normal/*.png"))[0]
    report_object(root / "test" / "normal" / "report.dcm", next_patient().header)
    unsupported_syntax(png, root / "test" / "normal" / "video.dcm", next_patient().header)
    return patients


def test_no_header_value_reaches_any_output(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    patients = write_phi_data(data)
    sample = pydicom.dcmread(next((data / "train" / "normal").glob("*.dcm")))
    assert {k for k in BASIC_PROFILE if k in sample} == set(BASIC_PROFILE)  # every attribute really is there
    assert not set(BASIC_PROFILE) & set(dicom.TECHNICAL_TAGS)  # the allow-list keeps none of them
    # The search is live: on the input it finds every kind of value.
    found_in_input = "\n".join(find_phi([data], patients))
    assert f": {MARKER}" in found_in_input and f": {UID_ROOT}" in found_in_input
    assert all(f": {token}" in found_in_input for token in patients[0].tokens[:20])

    server = MlflowServer(tmp_path / "mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(dicom.SALT_ENV, None)
    with server:
        run = subprocess.run(
            [sys.executable, "-m", "radpipe", "run", "--data", str(data), *[a for s in FAST for a in ("--set", s)]],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        predict_args = ["predict", "models:/phi-test@champion", str(data / "test"), "--output", "predictions.jsonl"]
        predict = subprocess.run(
            [sys.executable, "-m", "radpipe", *predict_args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert predict.returncode == 1, predict.stderr[-3000:]  # the report and the video are not images

    # What was produced: DICOM really went through, with reasons for the files that could not.
    (manifest_path,) = (work / ".radpipe" / "pipeline_root").glob("radpipe-training-*/ingest/dataset/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert {f["format"] for f in manifest["files"]} == {"DICOM"} and manifest["report"]["dicom"]["files"] >= 20
    assert any("report.dcm (is a DICOM Comprehensive SR Storage" in s for s in manifest["report"]["skipped_non_images"])
    assert [u["path"] for u in manifest["report"]["unreadable"]] == ["test/normal/video.dcm"]
    (card,) = (work / ".radpipe" / "pipeline_root").glob("radpipe-training-*/evaluate-and-register/model_card")
    card_text = card.read_text()
    assert "- DICOM:" in card_text and "Burned-in annotations" in card_text and "window lung (-600/1500)" in card_text
    predictions = [json.loads(line) for line in (work / "predictions.jsonl").read_text().splitlines()]
    assert sum("label" in p for p in predictions) >= 6 and sum("error" in p for p in predictions) == 2

    outputs = [tmp_path / "mlflow", work / ".radpipe", work / "predictions.jsonl"]
    assert (tmp_path / "mlflow" / "mlflow.db").is_file() and any((tmp_path / "mlflow" / "mlartifacts").rglob("*.html"))
    leaks = find_phi(
        [p if p.is_dir() else p.parent for p in outputs],
        patients,
        texts=[
            ("radpipe run stdout", run.stdout),
            ("radpipe run stderr", run.stderr),
            ("radpipe predict stdout", predict.stdout),
            ("radpipe predict stderr", predict.stderr),
        ],
    )
    assert not [leak for leak in leaks if not leak.startswith(str(data))], "\n".join(leaks[:40])
