"""The one place that reads and writes file, ``s3://`` and ``http(s)://`` URIs.

S3 follows the AWS conventions, so the same code talks to AWS, MinIO on a cluster and moto in tests:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``. ``MLFLOW_S3_ENDPOINT_URL`` is honoured too, so one environment serves both radpipe
and MLflow's own S3 client.

Every write is atomic: data goes to a temporary name beside the target and is renamed into place, so a
crash never leaves a half-written file where a reader expects a whole one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpipe.errors import StorageError
from radpipe.progress import Progress

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------- URIs


def scheme(uri: str) -> str:
    """'s3', 'http', 'https' or 'file' (plain paths and file:// URIs)."""
    parsed = urllib.parse.urlparse(str(uri))
    if parsed.scheme in ("s3", "http", "https"):
        return parsed.scheme
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # 'C:' on Windows is a path
        return "file"
    raise StorageError(
        f"unsupported URI scheme {parsed.scheme!r} in {uri!r}; use a local path, s3://bucket/key or https://..."
    )


def local_path(uri: str) -> Path:
    """The path of a local URI (a plain path or ``file://``)."""
    parsed = urllib.parse.urlparse(str(uri))
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    return Path(uri)


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an S3 URI; expected s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client() -> Any:
    """A boto3 S3 client for the configured endpoint (AWS, MinIO, or a test server)."""
    import boto3
    from botocore.config import Config

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        or None
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        # MinIO and most S3-compatible servers want path-style addressing.
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def _s3_error(exc: Exception, uri: str, action: str) -> StorageError:
    hint = (
        "check the bucket and key, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and, "
        "for MinIO or another S3-compatible server, AWS_ENDPOINT_URL"
    )
    return StorageError(f"cannot {action} {uri}: {exc}; {hint}")


# ------------------------------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.

    Works for files and directories. On failure the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            old = tmp / ".old"
            target.rename(old)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------- reads


DEFAULT_DOWNLOAD_TIMEOUT = 3600.0
"""Seconds a download may take from request to last byte, unless the caller says otherwise."""
TIMEOUT_KEY = "data.download_timeout_seconds"
"""The config key that sets the deadline of ingest's downloads; named in their errors."""
_SOCKET_TIMEOUT = 30.0
"""Longest a single socket read may block: how often a trickling download is checked against its deadline."""


class _Deadline:
    """The end of a download (or of all of a folder's), checked between reads; its error names the key."""

    def __init__(self, uri: str, seconds: float, key: str) -> None:
        self.uri, self.seconds, self.key = uri, seconds, key
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            key = f" (config key '{self.key}')" if self.key else ""
            raise StorageError(
                f"cannot download {self.uri}: not done after {self.seconds:g} s{key}; the server sends too slowly "
                f"or stalled. Check it, or raise {self.key or 'the deadline'} for a large file on a slow link"
            )
        return left


def _http_stream(url: str, uri: str, deadline: _Deadline, sink: Any, bar: Progress | None = None) -> None:
    """GET ``url`` into ``sink`` (a binary file), checking ``deadline`` between reads.

    ``read1`` returns whatever bytes have arrived instead of waiting for a whole chunk, so a server that sends
    one byte every 20 s is caught by the deadline (each socket read blocks at most ``_SOCKET_TIMEOUT``).
    """
    try:
        with urllib.request.urlopen(url, timeout=min(_SOCKET_TIMEOUT, deadline.remaining())) as response:
            if bar is not None and bar.total is None:
                bar.total = int(response.headers.get("Content-Length") or 0) or None
            while True:
                deadline.remaining()
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        deadline.remaining()
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
            deadline.remaining()  # over the deadline: say so, with the key
        raise StorageError(f"cannot download {uri}: {exc}; check the URL and your network") from exc


def read_bytes(uri: str, timeout: float = DEFAULT_DOWNLOAD_TIMEOUT, timeout_key: str = "") -> bytes:
    """A whole (small) object: a YAML class map, a config file."""
    kind = scheme(uri)
    if kind == "file":
        path = local_path(uri)
        if not path.is_file():
            raise StorageError(f"{uri} does not exist or is not a file")
        return path.read_bytes()
    if kind == "s3":
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise _s3_error(exc, uri, "read") from exc
    buffer = io.BytesIO()
    _http_stream(uri, uri, _Deadline(uri, timeout, timeout_key), buffer)
    return buffer.getvalue()


def fetch(
    uri: str,
    workdir: str | Path,
    label: str = "download",
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    timeout_key: str = "",
) -> Path:
    """Make ``uri`` available as a local path and return it.

    Local paths are returned as they are (never copied). An ``s3://`` URI is a single object or, when no
    object has exactly that key, every object under that prefix (a folder). An ``http(s)://`` URI is one
    file. Downloads land in ``workdir``, print progress (a line at least every few seconds in a log), and
    fail once they take more than ``timeout`` seconds in all, naming ``timeout_key``.
    """
    kind = scheme(uri)
    workdir = Path(workdir)
    if kind == "file":
        path = local_path(uri)
        if not path.exists():
            raise StorageError(f"{uri} does not exist; check the path")
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = _Deadline(uri, timeout, timeout_key)
    logger.info(f"{label}: {uri} (deadline {timeout:g} s{', ' + timeout_key if timeout_key else ''})")
    if kind == "s3":
        return _fetch_s3(uri, workdir, label, deadline)
    name = Path(urllib.parse.urlparse(uri).path).name or "download"
    target = workdir / name
    with atomic_path(target) as tmp, open(tmp, "wb") as fh, Progress(label, None, "B") as bar:
        _http_stream(uri, uri, deadline, fh, bar)
    return target


def _fetch_s3(uri: str, workdir: Path, label: str, deadline: _Deadline) -> Path:
    bucket, key = split_s3(uri)
    client = s3_client()
    try:
        objects = _list_s3(client, bucket, key)
    except Exception as exc:
        raise _s3_error(exc, uri, "list") from exc
    exact = [o for o in objects if o["Key"] == key]
    if exact:  # a single object
        target = workdir / Path(key).name
        _download_s3_objects(client, bucket, exact, {key: target}, label, deadline)
        return target
    prefix = key.rstrip("/") + "/" if key else ""
    inside = [o for o in objects if o["Key"].startswith(prefix) and not o["Key"].endswith("/")]
    if not inside:
        raise StorageError(f"{uri} matches no object; check the bucket and prefix")
    root = workdir / (Path(key.rstrip("/")).name or bucket)
    targets = {}
    for obj in inside:
        relative = obj["Key"][len(prefix) :]
        target = (root / relative).resolve()
        if root.resolve() not in target.parents:
            raise StorageError(f"refusing S3 key {obj['Key']!r}: it would be written outside {root}")
        targets[obj["Key"]] = target
    _download_s3_objects(client, bucket, inside, targets, label, deadline)
    return root


def _list_s3(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def _download_s3_objects(
    client: Any,
    bucket: str,
    objects: list[dict[str, Any]],
    targets: dict[str, Path],
    label: str,
    deadline: _Deadline,
) -> None:
    """Each object through a presigned GET, on the same deadline-checked HTTP path as ``https://`` URIs:
    boto3's own transfer reads in fixed-size blocks, which a trickling server can stall indefinitely."""
    total = sum(int(o.get("Size", 0)) for o in objects) or None
    with Progress(label, total, "B") as bar:
        for obj in objects:
            target = targets[obj["Key"]]
            where = f"s3://{bucket}/{obj['Key']}"
            try:
                url = client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": obj["Key"]}, ExpiresIn=int(deadline.seconds) + 60
                )
            except Exception as exc:
                raise _s3_error(exc, where, "download") from exc
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                try:
                    _http_stream(url, where, deadline, fh, bar)
                except StorageError as exc:
                    if "config key" in str(exc):
                        raise
                    raise _s3_error(exc.__cause__ or exc, where, "download") from exc


# ------------------------------------------------------------------------------------------ writes


def upload(local: str | Path, uri: str, label: str = "upload") -> None:
    """Copy a local file or folder to ``uri`` (a local path or ``s3://bucket/prefix``)."""
    local = Path(local)
    if not local.exists():
        raise StorageError(f"cannot upload {local}: it does not exist")
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    kind = scheme(uri)
    if kind == "file":
        target = local_path(uri)
        with atomic_path(target) as tmp:
            if local.is_dir():
                shutil.copytree(local, tmp)
            else:
                shutil.copy2(local, tmp)
        return
    if kind != "s3":
        raise StorageError(f"cannot upload to {uri}: only local paths and s3:// URIs are writable")
    bucket, key = split_s3(uri)
    client = s3_client()
    total = sum(p.stat().st_size for p in files) or None
    with Progress(label, total, "B") as bar:
        for path in files:
            object_key = key if not local.is_dir() else f"{key.rstrip('/')}/{path.relative_to(local).as_posix()}"
            try:
                # S3 PUTs are atomic per object: a reader sees the old object or the whole new one.
                client.upload_file(str(path), bucket, object_key.lstrip("/"), Callback=bar.update)
            except Exception as exc:
                raise _s3_error(exc, f"s3://{bucket}/{object_key}", "upload to") from exc


# ---------------------------------------------------------------------------------------- archives


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class ArchiveLimits:
    """How far an archive may expand before a single byte is written (decompression bombs).

    Each refusal names the config key (``<prefix>max_archive_bytes``, ...) that would let it through.
    """

    max_bytes: int
    max_members: int
    max_ratio: float
    max_file_bytes: int
    key_prefix: str = "data."

    def refuse(self, archive: Path, what: str, key: str) -> StorageError:
        return StorageError(
            f"{archive.name}: {what}; refused before extracting (config key '{self.key_prefix}{key}'). "
            f"Check the archive, or raise {self.key_prefix}{key} if it is what you meant"
        )

    def check(self, archive: Path, sizes: Iterator[tuple[str, int]]) -> None:
        """Check the members' (name, expanded size), streamed, stopping at the first one over a limit."""
        packed = max(1, archive.stat().st_size)
        total = 0
        for members, (name, size) in enumerate(sizes, start=1):
            total += size
            if members > self.max_members:
                raise self.refuse(archive, f"more than {self.max_members} members", "max_archive_members")
            if size > self.max_file_bytes:
                raise self.refuse(
                    archive,
                    f"member {name!r} expands to {size} bytes, more than {self.max_file_bytes}",
                    "max_file_bytes",
                )
            if total > self.max_bytes:
                raise self.refuse(
                    archive, f"its members expand to more than {self.max_bytes} bytes", "max_archive_bytes"
                )
            if total > self.max_ratio * packed:
                raise self.refuse(
                    archive,
                    f"its members expand to more than {self.max_ratio:g} times its own {packed} bytes",
                    "max_archive_ratio",
                )


def unpack(archive: Path, dest: str | Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract a .zip / .tar(.gz) into ``dest``, refusing members that would land outside it, links, and
    (with ``limits``) archives that expand too far. Zip members are copied with their bytes counted, so a
    header that understates a member's size cannot get past the limits either."""
    dest = Path(dest)
    root = dest.resolve()
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        try:
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as zf:
                    infos = zf.infolist()
                    for info in infos:
                        _check_member(tmp, info.filename, archive)
                    if limits is not None:
                        limits.check(archive, ((i.filename, i.file_size) for i in infos))
                    _extract_zip(zf, infos, tmp, archive, limits)
            else:
                with tarfile.open(archive) as tf:
                    if limits is not None:
                        limits.check(archive, ((m.name, m.size) for m in tf))
                    for member in tf.getmembers():
                        _check_member(tmp, member.name, archive)
                        if member.issym() or member.islnk():
                            raise StorageError(
                                f"{archive.name}: links are not allowed in data archives ({member.name})"
                            )
                    tf.extractall(tmp, filter="data")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise StorageError(
                f"{archive.name} is not a readable archive ({exc}); re-create the .zip or .tar.gz"
            ) from exc
    return root


def _extract_zip(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path, archive: Path, limits: ArchiveLimits | None
) -> None:
    written = 0
    for info in infos:
        target = dest / info.filename
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                written += len(chunk)
                if limits is not None and size > limits.max_file_bytes:
                    raise limits.refuse(
                        archive,
                        f"member {info.filename!r} expands past {limits.max_file_bytes} bytes",
                        "max_file_bytes",
                    )
                if limits is not None and written > limits.max_bytes:
                    raise limits.refuse(
                        archive, f"its members expand past {limits.max_bytes} bytes", "max_archive_bytes"
                    )
                out.write(chunk)


def _check_member(dest: Path, member: str, archive: Path) -> None:
    target = (dest / member).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        raise StorageError(f"{archive.name}: member {member!r} would be extracted outside the target folder")
