"""The registry commands' own reader of the embedded store (radpipe.embedded_registry) against MLflow's.

Each test runs the same registry operations through :class:`EmbeddedRegistry` and through
:class:`mlflow.MlflowClient` on two copies of one store that MLflow created, then reads both back with
MLflow's client: the two must agree on every alias and tag. Timing is in bench/registry_commands.py.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from radpipe import embedded_registry, registry
from radpipe.errors import RegistryError


def _client(db: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{db}")


@pytest.fixture(scope="module")
def made_by_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with model ``m``: versions 1-3 passed and complete (1 champion, 3 challenger), version 4
    failed the gate, version 5 pending; and model ``other`` with one version."""
    db = tmp_path_factory.mktemp("made") / "mlflow.db"
    client = _client(db)
    experiment = client.create_experiment("registry")
    for name, gates in (("m", ["passed", "passed", "passed", "failed", None]), ("other", ["passed"])):
        for gate in gates:
            run_id = client.create_run(experiment).info.run_id
            tags = {registry.GATE_TAG: gate or "passed", "radpipe.test_accuracy": "0.9"}
            version = registry.create_version(client, name, f"runs:/{run_id}/model", run_id, tags, "test")
            if gate is not None:
                registry.mark_complete(client, name, version)
            if gate == "passed":
                registry.move_gate_aliases(client, name, version)
    return db


@pytest.fixture
def two_copies(made_by_mlflow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Path, Path]:
    """(embedded client, MLflow client, their two database files): the same store twice."""
    monkeypatch.setattr(registry, "_now", lambda: "2026-01-01T00:00:00Z")  # stamps compare equal
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    shutil.copy(made_by_mlflow, ours)
    shutil.copy(made_by_mlflow, theirs)
    embedded = embedded_registry.open_store(f"sqlite:///{ours}")
    assert isinstance(embedded, embedded_registry.EmbeddedRegistry)
    yield embedded, _client(theirs), ours, theirs
    embedded.close()


def _state(db: Path) -> dict[str, Any]:
    """Everything the registry commands can change, as MLflow's own client reads it."""
    client = _client(db)
    state = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        state[model.name] = {
            "aliases": {alias: str(v) for alias, v in model.aliases.items()},
            "tags": dict(model.tags),
            "versions": {str(v.version): dict(v.tags) for v in versions},
        }
    return state


def test_the_pinned_mlflow_creates_the_schema_revision_the_reader_knows(made_by_mlflow: Path) -> None:
    """Fails on an MLflow upgrade that migrates the store: check the registry tables, then move the pin."""
    with sqlite3.connect(made_by_mlflow) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == embedded_registry.SCHEMA_REVISION


def test_reading_agrees_with_mlflow(two_copies) -> None:  # type: ignore[no-untyped-def]
    embedded, mlflow_client, _, _ = two_copies
    assert registry.list_models(embedded) == registry.list_models(mlflow_client)
    for name in ("m", "other"):
        assert registry.list_versions(embedded, name) == registry.list_versions(mlflow_client, name)
        assert registry.aliases(embedded, name) == registry.aliases(mlflow_client, name)
    assert registry.unfit_reasons(registry.get_version(embedded, "m", "4")) == registry.unfit_reasons(
        registry.get_version(mlflow_client, "m", "4")
    )
    assert registry.aliases(embedded, "absent") == {} == registry.aliases(mlflow_client, "absent")


def test_promote_and_rollback_write_what_mlflow_writes(two_copies) -> None:  # type: ignore[no-untyped-def]
    embedded, mlflow_client, ours, theirs = two_copies
    for client in (embedded, mlflow_client):
        registry.promote(client, "m", version="2")
        registry.promote(client, "m", from_alias="challenger")
        registry.promote(client, "m", "staging", version="4", force=True)
        registry.rollback(client, "m")
        registry.rollback(client, "m")
        registry.move_gate_aliases(client, "other", "1")
    assert _state(ours) == _state(theirs)
    assert _state(ours)["m"]["aliases"] == {"champion": "1", "challenger": "3", "staging": "4"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: registry.promote(c, "nope", version="1"), "no registered model named 'nope'"),
        (lambda c: registry.promote(c, "m", version="9"), "m has no version 9"),
        (lambda c: registry.promote(c, "m", version="5"), "its registration is pending"),
        (lambda c: registry.rollback(c, "other"), "no previous champion to roll back to"),
    ],
)
def test_refusals_read_the_same(two_copies, call, message: str) -> None:  # type: ignore[no-untyped-def]
    embedded, mlflow_client, ours, theirs = two_copies
    refusals = []
    for client in (embedded, mlflow_client):
        with pytest.raises(RegistryError) as refused:
            call(client)
        refusals.append(str(refused.value).replace(client.tracking_uri, "URI"))
    assert message in refusals[0] and refusals[0] == refusals[1]
    assert _state(ours) == _state(theirs)


def test_an_alias_on_a_missing_version_is_refused_and_nothing_is_written(two_copies) -> None:  # type: ignore[no-untyped-def]
    embedded, _, ours, theirs = two_copies
    with pytest.raises(embedded_registry.StoreError) as refused:
        embedded.set_registered_model_alias("m", "champion", "42")
    assert refused.value.error_code == embedded_registry.NOT_FOUND
    assert registry.store_failure(refused.value) == "Model Version (name=m, version=42) not found"
    assert _state(ours) == _state(theirs)


def test_another_schema_revision_is_left_to_mlflow(made_by_mlflow: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copy(made_by_mlflow, db)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed0000'")
    assert embedded_registry.open_store(f"sqlite:///{db}") is None
    assert embedded_registry.open_store(f"sqlite:///{tmp_path / 'absent.db'}") is None  # found, never created
    assert not (tmp_path / "absent.db").exists()
    assert embedded_registry.open_store("http://127.0.0.1:5000") is None


def test_registry_commands_on_the_embedded_store_do_not_import_mlflow(made_by_mlflow: Path, tmp_path: Path) -> None:
    """Why they are fast: `import mlflow` alone costs 2-3 s (bench/registry_commands.py measures)."""
    home = tmp_path / ".radpipe"
    home.mkdir()
    shutil.copy(made_by_mlflow, home / "mlflow.db")
    script = (
        "import sys\n"
        "from radpipe.cli import main\n"
        "codes = [main(['models']), main(['models', 'm']), main(['promote', 'm', '--version', '2']),\n"
        "         main(['rollback', 'm'])]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy', 'tensorflow'))\n"
        "print('codes', codes, 'heavy', heavy)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "codes [0, 0, 0, 0] heavy []" in done.stdout
    assert "m@champion: version 1 -> version 2" in done.stdout and f"registry: sqlite:///{home}" in done.stderr
