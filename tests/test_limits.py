"""Size limits on what ingest and ``radpipe predict`` read: archive expansion (bytes, members, ratio), bytes
per file, pixels per image. Real archives, real files and a real ``radpipe predict`` process; each refusal
must name the file and the key (or flag) that would let it through."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from radpipe import storage
from radpipe.components.ingest.ingest import ingest
from radpipe.config import DataConfig
from radpipe.errors import ConfigError, DataError, StorageError

from conftest import SAMPLE, make_tree


def huge_png(path: Path, side: int = 13_000) -> Path:
    """A genuine ``side`` x ``side`` grey PNG of zeros (the issue's 684 KB, 169-megapixel file), written row by
    row so that making it never holds the pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


LIMITS = storage.ArchiveLimits(max_bytes=50_000_000, max_members=100, max_ratio=100.0, max_file_bytes=20_000_000)


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("members", "limits", "message"),
    [
        ({"data/cats/zeros.png": bytes(15_000_000)}, LIMITS, r"more than 100 times .*'data\.max_archive_ratio'"),
        (
            {"data/cats/zeros.png": bytes(30_000_000)},
            dataclasses.replace(LIMITS, max_ratio=1e6),
            r"'data/cats/zeros.png' expands to 30000000 bytes.*'data\.max_file_bytes'",
        ),
        (
            {f"data/cats/{i}.png": bytes(10_000_000) for i in range(6)},
            dataclasses.replace(LIMITS, max_ratio=1e6),
            r"more than 50000000 bytes.*'data\.max_archive_bytes'",
        ),
        (
            {f"data/cats/{i}.png": b"x" for i in range(101)},
            LIMITS,
            r"more than 100 members.*'data\.max_archive_members'",
        ),
    ],
)
def test_zip_over_a_limit_is_refused_before_a_byte_is_written(
    tmp_path: Path, members: dict[str, bytes], limits: storage.ArchiveLimits, message: str
) -> None:
    archive = zip_of(tmp_path / "bomb.zip", members)
    with pytest.raises(StorageError, match=message) as caught:
        storage.unpack(archive, tmp_path / "out", limits)
    assert "bomb.zip" in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]  # no staging folder left behind


def test_tar_gz_bomb_is_refused_by_ratio(tmp_path: Path) -> None:
    payload = tmp_path / "zeros.bin"
    payload.write_bytes(bytes(15_000_000))
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(payload, arcname="data/cats/zeros.png")
    payload.unlink()
    with pytest.raises(StorageError, match=r"bomb.tar.gz: .*100 times.*'data\.max_archive_ratio'"):
        storage.unpack(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


def test_ingest_refuses_a_zip_bomb_with_its_default_limits(tmp_path: Path, two_class_tree: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in two_class_tree.rglob("*.png"):
            zf.write(path, path.relative_to(two_class_tree))
        zf.writestr("cats/padding.bin", bytes(200_000_000))  # 200 MB of zeros: about 200 KB packed
    with pytest.raises(StorageError, match=r"data.zip: .*'data\.max_archive_ratio'"):
        ingest(DataConfig(uri=str(archive)), tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "unpacked").exists()


def test_ingest_refuses_an_image_over_the_pixel_limit_from_its_header(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", {"cats": 3, "dogs": 3})
    big = huge_png(root / "cats" / "big.png", side=6000)
    assert big.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"cats/big.png is 6000x6000 = 36.0 megapixels.*data\.max_image_pixels"):
        ingest(DataConfig(uri=str(root)), tmp_path / "out", tmp_path / "work")
    report = ingest(DataConfig(uri=str(root), max_image_pixels=40_000_000), tmp_path / "out2", tmp_path / "w2")
    assert report.counts["train"]["cats"] >= 1  # raised, the limit lets the image in


def test_ingest_refuses_a_file_over_the_byte_limit(tmp_path: Path, two_class_tree: Path) -> None:
    with pytest.raises(DataError, match=r"cats/img0.png is \d+ bytes, more than data\.max_file_bytes allows \(500\)"):
        ingest(DataConfig(uri=str(two_class_tree), max_file_bytes=500), tmp_path / "out", tmp_path / "work")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_archive_bytes", 0),
        ("max_archive_members", -1),
        ("max_archive_ratio", 0.5),
        ("max_file_bytes", 0),
        ("max_image_pixels", 0),
        ("download_timeout_seconds", 0),
    ],
)
def test_limit_keys_are_validated(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"config key 'data\.{key}'"):
        DataConfig.from_dict({key: value}, "data")


def test_predict_refuses_a_huge_image_before_decoding_it(tmp_path: Path, served_model_dir: Path) -> None:
    """The issue's 13000 x 13000 PNG took 4.1 GB in ``radpipe predict``: now it is one error line, and the
    process stays near the size of TensorFlow with a model loaded."""
    big = huge_png(tmp_path / "big.png")
    small = next(p for p in sorted((SAMPLE / "test").rglob("*")) if p.suffix == ".png")
    probe = (
        "import resource, subprocess, sys; "
        "rc = subprocess.run(sys.argv[1:]).returncode; "
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
    )
    cmd = [sys.executable, "-m", "radpipe", "predict", str(served_model_dir), str(big), str(small)]
    done = subprocess.run(
        [sys.executable, "-c", probe, *cmd],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    rc, max_rss_kib = map(int, done.stderr.strip().splitlines()[-1].split())
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rc == 1, done.stderr  # one image refused
    refused = next(r for r in rows if r["path"] == str(big))
    assert "13000x13000 = 169.0 megapixels" in refused["error"] and "--max-image-pixels" in refused["error"]
    assert "label" in next(r for r in rows if r["path"] == str(small))
    assert max_rss_kib < 1_500_000, f"predict peaked at {max_rss_kib / 1024:.0f} MiB"
