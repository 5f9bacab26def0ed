"""radpipe.storage against the real thing: the file system, an S3 server (moto), an HTTP server."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from radpipe import storage
from radpipe.errors import StorageError


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_scheme() -> None:
    assert storage.scheme("/a/b") == "file"
    assert storage.scheme("file:///a/b") == "file"
    assert storage.scheme("s3://bucket/key") == "s3"
    assert storage.scheme("https://x/y.zip") == "https"
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs'"):
        storage.scheme("gs://bucket/key")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    storage.atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), storage.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporaries left behind


def test_atomic_directory_replace(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    with storage.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with storage.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_fetch_local_is_not_copied(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    assert storage.fetch(str(tmp_path / "x"), tmp_path / "work") == tmp_path / "x"
    with pytest.raises(StorageError, match="does not exist"):
        storage.fetch(str(tmp_path / "nope"), tmp_path / "work")


def test_s3_round_trip_folder_and_object(s3_server: str, tmp_path: Path) -> None:
    boto3.client("s3").create_bucket(Bucket="data")
    src = tmp_path / "src"
    (src / "train" / "a").mkdir(parents=True)
    (src / "train" / "a" / "1.png").write_bytes(b"one")
    (src / "top.txt").write_text("top")
    storage.upload(src, "s3://data/sets/demo")
    got = storage.fetch("s3://data/sets/demo", tmp_path / "down")
    assert (got / "train" / "a" / "1.png").read_bytes() == b"one"
    assert (got / "top.txt").read_text() == "top"
    single = storage.fetch("s3://data/sets/demo/top.txt", tmp_path / "down2")
    assert single.read_text() == "top"
    assert storage.read_bytes("s3://data/sets/demo/top.txt") == b"top"
    with pytest.raises(StorageError, match="matches no object"):
        storage.fetch("s3://data/nothing-here", tmp_path / "down3")
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL"):
        storage.read_bytes("s3://no-such-bucket/x")


def test_http_download(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base = http_root
    (root / "weights.h5").write_bytes(b"w" * 5000)
    path = storage.fetch(f"{base}/weights.h5", tmp_path / "dl")
    assert path.read_bytes() == b"w" * 5000
    with pytest.raises(StorageError, match="cannot download"):
        storage.fetch(f"{base}/missing.zip", tmp_path / "dl")


def test_unpack_zip_and_tar(tmp_path: Path) -> None:
    zpath = tmp_path / "d.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("top/cls/a.txt", "a")
    assert (storage.unpack(zpath, tmp_path / "z") / "top" / "cls" / "a.txt").read_text() == "a"
    tpath = tmp_path / "d.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        data = b"b"
        info = tarfile.TarInfo("top/cls/b.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert (storage.unpack(tpath, tmp_path / "t") / "top" / "cls" / "b.txt").read_text() == "b"


def test_unpack_refuses_path_traversal_and_garbage(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(StorageError, match="outside the target folder"):
        storage.unpack(evil, tmp_path / "out")
    assert not (tmp_path.parent / "escape.txt").exists()
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(StorageError, match="not a readable archive"):
        storage.unpack(garbage, tmp_path / "out2")


class Trickle(http.server.BaseHTTPRequestHandler):
    """Headers at once, then one byte every ``interval`` seconds: the server that hung ``radpipe run``."""

    interval = 0.5

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(1_000_000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(self.interval)
        except OSError:  # the client gave up: what the test wants
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def trickle_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_download_fails_at_its_deadline_with_progress(
    trickle_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"not done after 2 s \(config key 'data\.download_timeout_seconds'\)"):
        storage.fetch(f"{trickle_url}/data.zip", tmp_path / "dl", "ingest: downloading", 2.0, storage.TIMEOUT_KEY)
    assert time.monotonic() - started < 5
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file, no staging folder
    said = caplog.messages
    assert f"ingest: downloading: {trickle_url}/data.zip (deadline 2 s, data.download_timeout_seconds)" in said
    assert said[-1].startswith("progress ingest: downloading: ") and said[-1].endswith(" FAILED")


def test_ingest_over_a_trickling_server_names_the_key(trickle_url: str, tmp_path: Path) -> None:
    from radpipe.components.ingest.ingest import ingest
    from radpipe.config import DataConfig

    config = DataConfig(uri=f"{trickle_url}/data.zip", download_timeout_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"data\.download_timeout_seconds"):
        ingest(config, tmp_path / "out", tmp_path / "work")
    assert time.monotonic() - started < 5
    with pytest.raises(StorageError, match=r"not done after 1\.5 s"):
        storage.read_bytes(f"{trickle_url}/classes.yaml", 1.5, storage.TIMEOUT_KEY)


def test_s3_download_has_a_deadline_too(s3_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="deadline")
    s3.put_object(Bucket="deadline", Key="folder/a.bin", Body=b"a" * 1000)
    got = storage.fetch("s3://deadline/folder", tmp_path / "ok", "weights", timeout=30)
    assert (got / "a.bin").read_bytes() == b"a" * 1000
    assert "weights: s3://deadline/folder (deadline 30 s)" in caplog.messages
    with pytest.raises(StorageError, match=r"not done after 1e-06 s"):
        storage.fetch("s3://deadline/folder", tmp_path / "late", "weights", timeout=1e-6)
