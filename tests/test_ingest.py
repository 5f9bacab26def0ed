"""Ingest: layouts, class names, splits, de-duplication, bad files and every bad-input error."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import boto3
import pytest

from radpipe import storage
from radpipe.components.ingest.ingest import ingest
from radpipe.config import DataConfig
from radpipe.dataset import read_manifest
from radpipe.errors import DataError

from conftest import CHEST_CT, make_tree, needs_shared, write_image


def run(tmp_path: Path, uri: str | Path, **config) -> tuple[dict, Path]:
    out = tmp_path / "out"
    report = ingest(DataConfig(uri=str(uri), **config), out, tmp_path / "work")
    manifest = read_manifest(out)
    assert manifest["fingerprint"] == report.fingerprint
    return manifest, out


def test_splitless_folder_gets_seeded_stratified_splits(tmp_path: Path, two_class_tree: Path) -> None:
    manifest, out = run(tmp_path, two_class_tree)
    assert manifest["classes"] == ["cats", "dogs"]
    assert manifest["report"]["created_splits"] == ["val", "test"]
    for split in ("train", "val", "test"):
        assert manifest["counts"][split]["cats"] == manifest["counts"][split]["dogs"] >= 2
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 28
    for entry in manifest["files"]:
        assert (out / entry["path"]).is_file()
        assert entry["path"].startswith(f"{entry['split']}/{entry['class']}/")
        assert len(entry["sha256"]) == 64 and entry["width"] == 24 and entry["mode"] == "RGB"
    again, _ = run(tmp_path / "again", two_class_tree)
    assert again["fingerprint"] == manifest["fingerprint"]  # deterministic
    other, _ = run(tmp_path / "other", two_class_tree, seed=7)
    assert other["fingerprint"] != manifest["fingerprint"]  # the split changed with the seed


def test_kaggle_layout_class_from_folder_prefix(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "kaggle",
        {
            "train/adenocarcinoma_left.lower.lobe_T2": 6,
            "train/normal": 6,
            "valid/adenocarcinoma_left.lower.lobe_T2": 2,
            "valid/normal": 2,
            "test/adenocarcinoma": 2,
            "test/normal": 2,
        },
        value_of=lambda folder: 50 if "adeno" in folder else 200,
    )
    manifest, _ = run(tmp_path, root)
    assert manifest["classes"] == ["adenocarcinoma", "normal"]
    assert manifest["counts"]["test"] == {"adenocarcinoma": 2, "normal": 2}
    assert manifest["report"]["created_splits"] == []


def test_class_map_inline_and_from_yaml(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train/Tumour A": 6, "train/healthy": 6})
    manifest, _ = run(tmp_path / "1", root, class_map={"Tumour A": "tumour"}, class_separator="")
    assert manifest["classes"] == ["healthy", "tumour"]
    (tmp_path / "map.yaml").write_text("Tumour A: tumour\nhealthy: normal\n")
    manifest, _ = run(tmp_path / "2", root, class_map=str(tmp_path / "map.yaml"))
    assert manifest["classes"] == ["normal", "tumour"]
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match="must be a mapping of folder name to class name"):
        run(tmp_path / "3", root, class_map=str(tmp_path / "bad.yaml"))


def test_leakage_duplicates_and_conflicting_labels_are_removed_and_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train/cats": 6, "train/dogs": 6, "test/cats": 2, "test/dogs": 2})
    shutil.copy(root / "train/cats/img0.png", root / "test/cats/leaked.png")  # train image copied into test
    shutil.copy(root / "train/dogs/img1.png", root / "train/dogs/again.png")  # copy within train
    shutil.copy(root / "train/cats/img2.png", root / "train/dogs/mislabelled.png")  # same image, two classes
    manifest, _ = run(tmp_path, root)
    report = manifest["report"]
    assert [d["removed"] for d in report["removed_cross_split_duplicates"]] == ["test/cats/leaked.png"]
    (within,) = report["removed_within_split_duplicates"]
    assert {within["removed"], within["kept"]} == {"train/dogs/again.png", "train/dogs/img1.png"}
    conflict = report["removed_conflicting_labels"]
    assert len(conflict) == 1 and conflict[0]["classes"] == ["cats", "dogs"]
    sources = {f["source"] for f in manifest["files"]}
    assert "test/cats/leaked.png" not in sources and "train/cats/img2.png" not in sources
    hashes = [f["sha256"] for f in manifest["files"]]
    assert len(hashes) == len(set(hashes))


def test_unreadable_and_non_image_files_are_reported_and_skipped(tmp_path: Path, two_class_tree: Path) -> None:
    (two_class_tree / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (two_class_tree / "cats" / "notes.txt").write_text("hello")
    (two_class_tree / "README.md").write_text("a data set")
    manifest, _ = run(tmp_path, two_class_tree)
    report = manifest["report"]
    assert [u["path"] for u in report["unreadable"]] == ["cats/broken.png"]
    assert "cats/notes.txt" in report["skipped_non_images"]
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 28


def test_image_modes_and_formats_are_recorded(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(4):
        write_image(root / "a" / f"grey{i}.png", 40, mode="L", seed=i)
        write_image(root / "a" / f"rgba{i}.png", 40, mode="RGBA", seed=10 + i)
        write_image(root / "b" / f"photo{i}.jpg", 200, seed=20 + i)
        write_image(root / "b" / f"p{i}.png", 200, mode="P", seed=30 + i)
    manifest, _ = run(tmp_path, root)
    modes = {(f["mode"], f["format"]) for f in manifest["files"]}
    assert {("L", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG"), ("P", "PNG")} <= modes


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "no readable images found"),
        ({"train/cats": 5}, r"only one class \('cats'\)"),
        ({"valid/cats": 3, "valid/dogs": 3}, "no train/ folder"),
        ({"train/cats": 5, "test/dogs": 2}, "dogs have no training images"),
    ],
)
def test_bad_data_sets_fail_with_what_to_do(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    root = make_tree(tmp_path / "d", layout)
    root.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        run(tmp_path, root)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_empty_class_folder_is_an_error(tmp_path: Path, two_class_tree: Path) -> None:
    (two_class_tree / "birds").mkdir()
    with pytest.raises(DataError, match="class folder birds is empty; add images to it or remove the folder"):
        run(tmp_path, two_class_tree)


def test_missing_uri_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data given: pass --data"):
        ingest(DataConfig(uri=""), tmp_path / "out", tmp_path / "w")
    with pytest.raises(Exception, match="does not exist"):
        run(tmp_path, tmp_path / "nowhere")


def test_zip_archive_with_wrapper_folder(tmp_path: Path, two_class_tree: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in two_class_tree.rglob("*.png"):
            zf.write(path, Path("Data") / path.relative_to(two_class_tree))
        zf.writestr("__MACOSX/._junk", "x")
    manifest, _ = run(tmp_path, archive)
    assert manifest["classes"] == ["cats", "dogs"]


def test_ingest_from_s3(s3_server: str, tmp_path: Path, two_class_tree: Path) -> None:
    boto3.client("s3").create_bucket(Bucket="images")
    storage.upload(two_class_tree, "s3://images/projects/ct")
    manifest, _ = run(tmp_path, "s3://images/projects/ct")
    assert manifest["source"] == "s3://images/projects/ct"
    assert sum(manifest["counts"]["train"].values()) > 0


@needs_shared(CHEST_CT)
def test_real_chest_ct_leakage_is_removed(tmp_path: Path) -> None:
    manifest, _ = run(tmp_path, CHEST_CT)
    report = manifest["report"]
    assert manifest["classes"] == ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]
    assert report["created_splits"] == []
    # The README's known defects: copies of train images in test/valid, and one image under two classes.
    assert len(report["removed_cross_split_duplicates"]) > 50
    assert any(
        set(c["classes"]) == {"large.cell.carcinoma", "squamous.cell.carcinoma"}
        for c in report["removed_conflicting_labels"]
    )
    hashes = [f["sha256"] for f in manifest["files"]]
    assert len(hashes) == len(set(hashes))
    assert json.dumps(manifest["counts"]["train"]) and sum(manifest["counts"]["train"].values()) > 500
