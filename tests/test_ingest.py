"""Ingest: layouts, class names, splits, de-duplication, near-duplicates and groups, bad files and every
bad-input error."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections import defaultdict
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

from radpipe import storage
from radpipe.components.ingest.ingest import ingest
from radpipe.config import DataConfig
from radpipe.dataset import read_manifest
from radpipe.errors import ConfigError, DataError

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
        ({"cats": 5}, r"only one class \('cats'\)"),  # a lone class folder is not a wrapper folder
        ({"Data/cats": 5}, r"only one class \('cats'\)"),
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
    # Near-duplicates beyond byte copies (docs/benchmarks.md, "Near-duplicates"): at 4 bits, 4 train-valid
    # pairs, i.e. 3 valid slices of training scans, removed with their look-alikes named.
    assert report["near_duplicates"]["found"] == {"train-val": 4, "train-test": 0, "val-test": 0}
    removed = report["removed_near_duplicates"]
    assert len(removed) == 3 and all(r["split"] == "val" and r["like"].startswith("train/") for r in removed)
    assert report["near_duplicates"]["left"] == {"train-val": 0, "train-test": 0, "val-test": 0}


# ------------------------------------------------------------------------ near-duplicates and groups


def near_copy(source: Path, target: Path, shift: int = 6) -> Path:
    """The same picture, not the same bytes: a small patch brightened, as a re-export or a pen mark would."""
    pixels = np.asarray(Image.open(source).convert("RGB")).copy()
    pixels[2:5, 2:5] = np.clip(pixels[2:5, 2:5].astype(int) + shift, 0, 255)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target)
    assert target.read_bytes() != source.read_bytes()
    return target


def write_scan(folder: Path, scan: str, slices: int, value: int, seed: int) -> None:
    """Slices named as Kaggle names them: ``000101.png``, ``000101 (2).png``, ``000101 - Copy.png``, ..."""
    names = [f"{scan}.png", f"{scan} - Copy.png"] + [f"{scan} ({i}).png" for i in range(2, slices)]
    for i, name in enumerate(names[:slices]):
        write_image(folder / name, value, seed=seed * 100 + i)


def test_near_duplicates_of_training_images_are_removed_from_given_splits_and_listed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train/cats": 6, "train/dogs": 6, "valid/cats": 2, "valid/dogs": 2})
    make_tree(root, {"test/cats": 2, "test/dogs": 2}, seed=100)
    near_copy(root / "train/cats/img0.png", root / "valid/cats/lookalike.png")
    near_copy(root / "train/dogs/img3.png", root / "test/dogs/lookalike.png", shift=-6)
    manifest, _ = run(tmp_path / "on", root)
    report = manifest["report"]
    removed = {(r["removed"], r["split"], r["like"]) for r in report["removed_near_duplicates"]}
    assert removed == {
        ("valid/cats/lookalike.png", "val", "train/cats/img0.png"),
        ("test/dogs/lookalike.png", "test", "train/dogs/img3.png"),
    }
    assert all(r["distance"] <= 4 for r in report["removed_near_duplicates"])
    nd = report["near_duplicates"]
    assert nd["max_bits"] == 4 and nd["hash"].startswith("pHash")
    assert nd["found"] == {"train-val": 1, "train-test": 1, "val-test": 0}
    assert nd["left"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert manifest["counts"]["val"] == {"cats": 2, "dogs": 2} and manifest["counts"]["test"]["dogs"] == 2
    assert all(re.fullmatch(r"[0-9a-f]{16}", f["phash"]) and f["group"] for f in manifest["files"])
    assert (
        "near-duplicates of training images removed from evaluation splits: 2"
        in ingest(DataConfig(uri=str(root)), tmp_path / "again", tmp_path / "w").summary()
    )

    # Off: nothing is hashed or removed, and the report says nothing was searched.
    manifest, _ = run(tmp_path / "off", root, near_duplicates=False)
    assert manifest["report"]["removed_near_duplicates"] == [] and manifest["report"]["near_duplicates"] == {}
    assert manifest["counts"]["val"]["cats"] == 3 and {f["phash"] for f in manifest["files"]} == {""}
    # At 0 bits only identical hashes count: the brightened patch moves the hash, the look-alikes stay.
    manifest, _ = run(tmp_path / "zero", root, near_duplicate_bits=0)
    assert len(manifest["report"]["removed_near_duplicates"]) < 2


def groups_by_split(manifest: dict) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for entry in manifest["files"]:
        splits.setdefault(entry["group"], set()).add(entry["split"])
    return splits


def test_made_splits_never_divide_a_scan_and_stay_stratified(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(12):
        write_scan(root / "cats", f"0001{i:02d}", slices=1 + i % 4, value=60, seed=i)
        write_scan(root / "dogs", f"0002{i:02d}", slices=1 + (i + 2) % 4, value=190, seed=50 + i)
    # A scan exported twice under another name: a near-duplicate joins the two groups.
    near_copy(root / "cats/000100.png", root / "cats/export-7.png")
    manifest, _ = run(tmp_path / "a", root)
    assert manifest["report"]["created_splits"] == ["val", "test"]
    spans = groups_by_split(manifest)
    assert all(len(splits) == 1 for splits in spans.values()), spans
    by_source = {f["source"]: f for f in manifest["files"]}
    assert by_source["cats/000103 (2).png"]["group"] == "name:cats/000103"
    assert by_source["cats/export-7.png"]["group"] == by_source["cats/000100.png"]["group"] == "name:cats/000100"
    for split in ("val", "test"):
        assert all(n >= 1 for n in manifest["counts"][split].values()), manifest["counts"]
    assert all(n >= 2 for n in manifest["counts"]["train"].values())
    grouping = manifest["report"]["grouping"]
    assert grouping["by"] == ["file-name pattern", "near-duplicates"] and grouping["across_splits"] == 0
    assert grouping["groups"] == 24 and grouping["largest"] == 4
    again, _ = run(tmp_path / "b", root)
    assert again["fingerprint"] == manifest["fingerprint"]  # seeded: the same groups land in the same splits
    other, _ = run(tmp_path / "c", root, seed=3)
    assert other["fingerprint"] != manifest["fingerprint"]
    # Without a pattern each file is its own group: slices of one scan then land in different splits.
    loose, _ = run(tmp_path / "loose", root, group_pattern="", near_duplicates=False)
    assert {f["group"][:5] for f in loose["files"]} == {"file:"}
    names = defaultdict(set)
    for f in loose["files"]:
        names[f["source"].split(" ")[0].removesuffix(".png")].add(f["split"])
    assert any(len(splits) > 1 for splits in names.values())


def test_validation_is_carved_from_a_given_train_split_by_whole_scans(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(10):
        write_scan(root / "train/cats", f"0003{i:02d}", slices=3, value=60, seed=i)
        write_scan(root / "train/dogs", f"0004{i:02d}", slices=2, value=190, seed=30 + i)
    make_tree(root, {"test/cats": 3, "test/dogs": 3}, seed=5000)
    manifest, _ = run(tmp_path, root)
    assert manifest["report"]["created_splits"] == ["val"]
    assert manifest["counts"]["test"] == {"cats": 3, "dogs": 3}  # given: kept as it is
    # Whole scans, as close to 15 % of each class as they come: 4 of 30 cats (scans of 3), 3 of 20 dogs (of 2).
    assert manifest["counts"]["val"] == {"cats": 3, "dogs": 2}
    spans = groups_by_split(manifest)
    assert all(len(splits) == 1 for splits in spans.values())
    val_groups = {f["group"] for f in manifest["files"] if f["split"] == "val"}
    assert len(val_groups) == 2 and all(g.startswith("name:") for g in val_groups)


def test_scans_across_given_splits_are_counted_not_moved(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train/cats": 5, "train/dogs": 5})
    for i, animal in enumerate(["cats", "cats", "dogs", "dogs"]):
        write_image(root / "test" / animal / f"held-out-{i}.png", 60 if animal == "cats" else 190, seed=700 + i)
    write_image(root / "train/cats/000500 (2).png", 60, seed=900)
    write_image(root / "test/cats/000500 (5).png", 60, seed=901)
    manifest, _ = run(tmp_path, root)
    assert manifest["report"]["grouping"]["across_splits"] == 1
    assert manifest["counts"]["test"]["cats"] == 3


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("group_pattern", "(unclosed", "not a valid regular expression"),
        ("group_pattern", r"\d+", "needs a capturing group"),
        ("near_duplicate_bits", 40, "must be 0..16"),
    ],
)
def test_grouping_config_errors_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key 'data.{key}': {message}"):
        DataConfig.from_dict({key: value}, "data")


def test_parent_run_records_grouping_and_near_duplicates(use_mlflow: str, tmp_path: Path) -> None:
    import mlflow

    from radpipe.components.ingest import stage

    root = make_tree(tmp_path / "d", {"train/cats": 6, "train/dogs": 6, "valid/cats": 2, "valid/dogs": 2})
    near_copy(root / "train/cats/img1.png", root / "valid/cats/lookalike.png")
    outputs = stage.run({"uri": str(root)}, {"experiment": "ingest-test"}, str(tmp_path / "out"), "job-1")
    run = mlflow.MlflowClient().get_run(outputs.parent_run_id)
    metrics, params = run.data.metrics, run.data.params
    assert metrics["data.removed_near_duplicates"] == 1 and metrics["data.near_duplicate_pairs.train-val"] == 1
    assert metrics["data.near_duplicate_pairs.train-test"] == 0 and metrics["data.val.images"] == 4
    # make_tree names files img0.png, img1.png, ... in every folder: valid's img0 and img1 share a scan id
    # with train's, so 12 groups, 4 of them in both given splits.
    assert metrics["data.groups"] == 12 and metrics["data.groups_across_splits"] == 4
    assert params["data.near_duplicate_bits"] == "4" and params["data.near_duplicates"] == "True"
    assert params["data.group_pattern"] == DataConfig().group_pattern
