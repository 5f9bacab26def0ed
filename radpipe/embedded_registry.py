"""The registry commands' client for the embedded store: MLflow's own sqlite file, read with ``sqlite3``.

``radpipe models``, ``promote`` and ``rollback`` against the embedded store should answer in well under two
seconds, and ``import mlflow`` alone takes two to three (plus one more for SQLAlchemy and the schema check).
So for ``sqlite:///.../mlflow.db`` these commands talk to the file directly through
:class:`EmbeddedRegistry`, which offers the few :class:`mlflow.MlflowClient` methods that
:mod:`radpipe.registry` calls for listing and moving aliases, with MLflow's semantics (each write one
transaction that checks what it touches exists, as MLflow's SQL store does). Versions are still created
only by MLflow (the evaluate-and-register stage), never here.

It reads MLflow's schema, so it is used only on the revision it was written for (:data:`SCHEMA_REVISION`,
what the pinned MLflow creates, and checked by the tests against a store MLflow makes). A store at any
other revision (an older or newer MLflow) is left to :class:`mlflow.MlflowClient`: :func:`open_store`
returns ``None`` and says so at debug level.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SCHEMA_REVISION = "dc11669786a5"
"""MLflow's alembic revision of the pinned mlflow 3.17.2 store (``alembic_version`` table)."""
WORKSPACE = "default"
"""MLflow 3's workspace column; a store without workspaces keeps everything in ``default``."""
DELETED_STAGE = "Deleted_Internal"
"""MLflow marks a version being deleted with this stage and hides it from every read."""
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID = "INVALID_PARAMETER_VALUE"
_NAME_FILTER = re.compile(r"""name=(?:'(?P<single>[^']*)'|"(?P<double>[^"]*)")""")


class StoreError(Exception):
    """What MLflow's client would raise as ``MlflowException``: a message and MLflow's error code."""

    def __init__(self, message: str, error_code: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    creation_timestamp: int | None
    run_id: str | None
    source: str | None
    status: str | None
    description: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def store_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; ``None`` for any other store."""
    if not tracking_uri.startswith("sqlite:///"):  # as radpipe.tracking writes it: the path, not quoted
        return None
    return Path(tracking_uri[len("sqlite:///") :])


def open_store(tracking_uri: str) -> EmbeddedRegistry | None:
    """An :class:`EmbeddedRegistry` on ``tracking_uri`` if it is an existing sqlite store at
    :data:`SCHEMA_REVISION`; otherwise ``None`` (the caller uses MLflow's client)."""
    path = store_path(tracking_uri)
    if path is None or not path.is_file():
        return None
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30, isolation_level=None)
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        logger.debug(f"registry: {path} is not readable as an MLflow store here ({exc}); using MLflow's client")
        return None
    revision = row[0] if row else None
    if revision != SCHEMA_REVISION:
        connection.close()
        logger.debug(
            f"registry: {path} is at MLflow schema {revision}, the embedded reader knows {SCHEMA_REVISION}; "
            "using MLflow's client"
        )
        return None
    connection.execute("PRAGMA foreign_keys = ON")
    return EmbeddedRegistry(tracking_uri, connection)


class EmbeddedRegistry:
    """The subset of :class:`mlflow.MlflowClient` that :mod:`radpipe.registry`'s commands use."""

    def __init__(self, tracking_uri: str, connection: sqlite3.Connection) -> None:
        self.tracking_uri = tracking_uri
        self._db = connection

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from its first read (``BEGIN IMMEDIATE``)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------------------------ reading

    def _require_model(self, name: str) -> tuple[str | None]:
        row = self._db.execute(
            "SELECT description FROM registered_models WHERE workspace = ? AND name = ?", (WORKSPACE, name)
        ).fetchone()
        if row is None:
            raise StoreError(f"Registered Model with name={name} not found", NOT_FOUND)
        return row

    def _require_version(self, name: str, version: str) -> tuple:
        if not str(version).isdigit():
            raise StoreError(f"Parameter 'version' must be an integer, got '{version}'.", INVALID)
        row = self._db.execute(
            "SELECT name, version, creation_time, run_id, source, status, description FROM model_versions "
            "WHERE workspace = ? AND name = ? AND version = ? AND current_stage IS NOT ?",
            (WORKSPACE, name, int(version), DELETED_STAGE),
        ).fetchone()
        if row is None:
            raise StoreError(f"Model Version (name={name}, version={version}) not found", NOT_FOUND)
        return row

    def _aliases(self, name: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?", (WORKSPACE, name)
        )
        return {alias: str(version) for alias, version in rows}

    def _model(self, name: str, description: str | None) -> RegisteredModel:
        tags = self._db.execute(
            "SELECT key, value FROM registered_model_tags WHERE workspace = ? AND name = ?", (WORKSPACE, name)
        )
        return RegisteredModel(name, description, self._aliases(name), dict(tags))

    def _version(self, row: tuple, aliases: dict[str, str]) -> ModelVersion:
        name, version, created, run_id, source, status, description = row
        tags = self._db.execute(
            "SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?",
            (WORKSPACE, name, version),
        )
        held = sorted(alias for alias, v in aliases.items() if v == str(version))
        return ModelVersion(name, str(version), created, run_id, source, status, description, dict(tags), held)

    def get_registered_model(self, name: str) -> RegisteredModel:
        (description,) = self._require_model(name)
        return self._model(name, description)

    def search_registered_models(self, max_results: int = 100) -> list[RegisteredModel]:
        rows = self._db.execute(
            "SELECT name, description FROM registered_models WHERE workspace = ? ORDER BY name LIMIT ?",
            (WORKSPACE, max_results),
        ).fetchall()
        return [self._model(name, description) for name, description in rows]

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        return self._version(self._require_version(name, version), self._aliases(name))

    def search_model_versions(self, filter_string: str) -> list[ModelVersion]:
        """Only the ``name='...'`` filter that :mod:`radpipe.registry` writes."""
        match = _NAME_FILTER.fullmatch(filter_string.strip())
        if match is None:
            raise StoreError(
                f"the embedded registry reader takes only name='...' filters, got {filter_string!r}", INVALID
            )
        name = match.group("single") if match.group("single") is not None else match.group("double")
        rows = self._db.execute(
            "SELECT name, version, creation_time, run_id, source, status, description FROM model_versions "
            "WHERE workspace = ? AND name = ? AND current_stage IS NOT ? ORDER BY version DESC",
            (WORKSPACE, name, DELETED_STAGE),
        ).fetchall()
        aliases = self._aliases(name)
        return [self._version(row, aliases) for row in rows]

    # ------------------------------------------------------------------------------------ writing

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        with self._write() as db:
            self._require_version(name, version)
            db.execute(
                "INSERT INTO registered_model_aliases (workspace, name, alias, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (workspace, name, alias) DO UPDATE SET version = excluded.version",
                (WORKSPACE, name, alias, int(version)),
            )

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        with self._write() as db:
            self._require_model(name)
            db.execute(
                "DELETE FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
                (WORKSPACE, name, alias),
            )

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        with self._write() as db:
            self._require_model(name)
            db.execute(
                "INSERT INTO registered_model_tags (workspace, name, key, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (workspace, key, name) DO UPDATE SET value = excluded.value",
                (WORKSPACE, name, key, str(value)),
            )

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        with self._write() as db:
            self._require_version(name, version)
            db.execute(
                "INSERT INTO model_version_tags (workspace, name, version, key, value) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace, key, name, version) DO UPDATE SET value = excluded.value",
                (WORKSPACE, name, int(version), key, str(value)),
            )
