"""The MLflow Model Registry as radpipe uses it: the ONE place where versions are created and aliases move.

Used by the evaluate-and-register stage and by ``radpipe promote / rollback / models``. MLflow 3 deprecates
stages, so radpipe works with aliases only (``models:/chest-ct@champion``):

- ``champion`` is what serving loads. The first version that passes the gate becomes champion; after that
  it moves only by :func:`promote` or :func:`rollback` (a person's decision).
- ``challenger`` is the newest version that passed the gate; the pipeline moves it.
- ``previous-<alias>`` is what ``<alias>`` pointed at before the last promote: what :func:`rollback` returns to.
  The registered model's tag ``radpipe.history.<alias>`` (a JSON list, oldest first) remembers the ones
  before that, so rollback can go back more than one step.

Version tags radpipe writes (``radpipe models`` shows them): ``radpipe.registration`` (``pending`` while the
stage registers; ``complete``; ``failed`` -- a version left ``pending`` belongs to a stage that died),
``radpipe.gate`` (``passed``/``failed``) with ``radpipe.gate.reasons``, and an audit trail of promotions.

Safety: a version is created with all its tags in one call and as ``pending``; aliases move last, each in
one call; a version that is not ``complete`` or failed the gate is refused by :func:`promote` unless forced.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from radpipe.aliases import alias_problem, previous_alias
from radpipe.errors import RadpipeError, RegistryError

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG_PREFIX = "radpipe.history."
MAX_HISTORY = 50

REGISTRATION_TAG = "radpipe.registration"
REGISTRATION_ERROR_TAG = "radpipe.registration.error"
PENDING, COMPLETE, FAILED = "pending", "complete", "failed"
GATE_TAG = "radpipe.gate"
GATE_REASONS_TAG = "radpipe.gate.reasons"
PASSED = "passed"

MODEL_DESCRIPTION = "Image classifier trained by radpipe. Research use only, not for clinical use."
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def client(tracking_uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri) if tracking_uri else MlflowClient()


def command_client(tracking_uri: str) -> Any:
    """The client of ``radpipe models / promote / rollback``: for the embedded store its own sqlite reader
    (no ``import mlflow``, so a listing takes a fraction of a second), else MLflow's client."""
    from radpipe import embedded_registry

    store = embedded_registry.open_store(tracking_uri)
    return store if store is not None else client(tracking_uri)


def store_failure(exc: BaseException) -> str | None:
    """The message of a failure the store reported: MLflow's ``MlflowException`` or the embedded reader's
    ``StoreError`` (both carry MLflow's ``error_code``, so neither needs ``import mlflow`` to recognise).
    ``None`` for anything else."""
    if isinstance(exc, sqlite3.Error):  # the embedded store's file (locked, read-only, damaged)
        return str(exc)
    if isinstance(exc, RadpipeError) or not getattr(exc, "error_code", None):
        return None
    return str(getattr(exc, "message", exc))


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "")) if store_failure(exc) is not None else ""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _name_filter(name: str) -> str:
    return f"name='{name}'" if "'" not in name else f'name="{name}"'


def check_alias(alias: str) -> None:
    """Refuse names MLflow rejects or reserves, and the ``previous-*`` aliases radpipe manages itself."""
    problem = alias_problem(alias)
    if problem:
        raise RegistryError(problem)


_UNIQUE_VIOLATION = ("UNIQUE constraint", "IntegrityError", "Duplicate entry", "duplicate key")


def _set_alias(mlflow_client: Any, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """``set_registered_model_alias``, safe when another process sets the same alias at the same moment.

    MLflow's SQL store sets an alias with "select, then insert or update": two concurrent first-time sets
    both insert and one fails on the unique key (seen with two pipeline runs against one server). The
    retry finds the row and updates it, so the alias ends on whichever version was set last.
    """
    for attempt in range(attempts):
        try:
            mlflow_client.set_registered_model_alias(name, alias, version)
            return
        except Exception as exc:
            message = store_failure(exc)
            if attempt == attempts - 1 or message is None or not any(s in message for s in _UNIQUE_VIOLATION):
                raise
            time.sleep(0.05 * (attempt + 1))


# ------------------------------------------------------------------------------------------- reading


def aliases(mlflow_client: Any, name: str) -> dict[str, str]:
    """alias -> version of the registered model ``name``; empty if the model does not exist (yet)."""
    try:
        model = mlflow_client.get_registered_model(name)
    except Exception as exc:
        if _code(exc) == _NOT_FOUND:
            return {}
        raise
    return {str(alias): str(version) for alias, version in model.aliases.items()}


def require_model(mlflow_client: Any, name: str) -> Any:
    try:
        return mlflow_client.get_registered_model(name)
    except Exception as exc:
        if _code(exc) != _NOT_FOUND:
            raise
    names = sorted(m.name for m in mlflow_client.search_registered_models(max_results=100))
    known = f"registered models there: {', '.join(names)}" if names else "the registry is empty: run the pipeline first"
    raise RegistryError(
        f"no registered model named {name!r} at {mlflow_client.tracking_uri}; {known} "
        "(MLFLOW_TRACKING_URI chooses the registry)"
    )


def get_version(mlflow_client: Any, name: str, version: str) -> Any:
    require_model(mlflow_client, name)
    try:
        return mlflow_client.get_model_version(name, str(version))
    except Exception as exc:
        if _code(exc) != _NOT_FOUND:
            raise
    raise RegistryError(f"{name} has no version {version}; `radpipe models {name}` lists its versions")


def all_versions(mlflow_client: Any, name: str) -> list[Any]:
    """Every version of ``name``, newest first."""
    found = mlflow_client.search_model_versions(_name_filter(name))
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def _history(mlflow_client: Any, name: str, alias: str) -> list[str]:
    raw = (mlflow_client.get_registered_model(name).tags or {}).get(HISTORY_TAG_PREFIX + alias, "[]")
    try:
        history = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning(f"registry: ignoring the unreadable tag {HISTORY_TAG_PREFIX + alias}={raw!r} of {name}")
        return []
    return [str(v) for v in history] if isinstance(history, list) else []


def _set_history(mlflow_client: Any, name: str, alias: str, history: list[str]) -> None:
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG_PREFIX + alias, json.dumps(history[-MAX_HISTORY:]))


def unfit_reasons(version: Any) -> list[str]:
    """Why a version should not get an alias: an incomplete registration or a failed gate."""
    tags = version.tags or {}
    reasons = []
    registration = tags.get(REGISTRATION_TAG, COMPLETE)  # versions registered outside radpipe carry no such tag
    if registration != COMPLETE:
        detail = tags.get(REGISTRATION_ERROR_TAG, "")
        reasons.append(f"its registration is {registration}" + (f" ({detail})" if detail else ""))
    if tags.get(GATE_TAG, PASSED) != PASSED:
        reasons.append(f"it failed the gate ({tags.get(GATE_REASONS_TAG, 'no reasons recorded')})")
    return reasons


# ------------------------------------------------------------------------------ registering a version


PENDING_DESCRIPTION = (
    "Registration in progress (radpipe.registration = pending). A version that stays pending belongs to a "
    "pipeline stage that died while registering it: do not promote it."
)


def create_version(
    mlflow_client: Any,
    name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str = PENDING_DESCRIPTION,
    model_id: str | None = None,
) -> str:
    """A new version of ``name``, created ``pending`` with all its tags in one call; its number."""
    try:
        mlflow_client.create_registered_model(name, description=MODEL_DESCRIPTION)
    except Exception as exc:
        if _code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    created = mlflow_client.create_model_version(
        name=name,
        source=source,
        run_id=run_id or None,
        tags={**{k: str(v) for k, v in tags.items()}, REGISTRATION_TAG: PENDING},
        description=description,
        model_id=model_id,
    )
    logger.info(f"registry: registered {name} version {created.version} (pending until the stage completes)")
    return str(created.version)


def mark_complete(mlflow_client: Any, name: str, version: str) -> None:
    mlflow_client.set_model_version_tag(name, version, REGISTRATION_TAG, COMPLETE)


def mark_failed(mlflow_client: Any, name: str, version: str, reason: str) -> bool:
    """Best effort, from an error handler: the registry may be the thing that failed. True if recorded.

    One quick attempt per call (no retries): the stage's retry budget was spent on the failure itself."""
    from radpipe.tracking import quick_requests

    try:
        with quick_requests():
            mlflow_client.set_model_version_tag(name, version, REGISTRATION_ERROR_TAG, reason[:2000])
            mlflow_client.set_model_version_tag(name, version, REGISTRATION_TAG, FAILED)
            mlflow_client.update_model_version(
                name, version, description=f"FAILED registration: {reason[:1500]}. Do not promote this version."
            )
    except Exception as exc:  # reported here; the caller raises the original error
        logger.warning(f"registry: could not mark {name} version {version} as failed ({exc}); it stays '{PENDING}'")
        return False
    logger.info(f"registry: marked {name} version {version} as failed: {reason}")
    return True


def _eligible(mlflow_client: Any, name: str) -> list[int]:
    """Versions that may hold the pipeline's aliases: complete, and passed the gate."""
    return [
        int(v.version)
        for v in all_versions(mlflow_client, name)
        if (v.tags or {}).get(GATE_TAG) == PASSED and (v.tags or {}).get(REGISTRATION_TAG) == COMPLETE
    ]


def _settle_on_newest(mlflow_client: Any, name: str, alias: str, attempts: int = 10) -> str:
    """Point ``alias`` at the newest eligible version, and check again after the move.

    Two pipeline runs registering at the same time both end here; whichever moves the alias last re-reads
    the versions afterwards, so the alias ends on the newest eligible version whatever the interleaving.
    """
    for _ in range(attempts):
        target = str(max(_eligible(mlflow_client, name)))
        _set_alias(mlflow_client, name, alias, target)
        if str(max(_eligible(mlflow_client, name))) == target:
            return target
    raise RegistryError(f"{name}@{alias} did not settle after {attempts} attempts: too many runs registering at once")


def move_gate_aliases(
    mlflow_client: Any, name: str, version: str, champion_alias: str = CHAMPION, challenger_alias: str = CHALLENGER
) -> list[str]:
    """Aliases for a ``complete`` version that passed the gate; returns the aliases it holds afterwards.

    The challenger moves to the newest such version; the champion only if the model has none yet (the first
    version that passes). If a move fails, aliases this call moved to ``version`` are put back (best effort).
    """
    before = aliases(mlflow_client, name)
    try:
        target = _settle_on_newest(mlflow_client, name, challenger_alias)
        logger.info(f"registry: {name}@{challenger_alias} -> version {target}")
        if champion_alias not in aliases(mlflow_client, name):
            _set_alias(mlflow_client, name, champion_alias, version)
            logger.info(f"registry: {name}@{champion_alias} -> version {version} (the first version to pass the gate)")
    except BaseException:
        _put_back(mlflow_client, name, version, before, (challenger_alias, champion_alias))
        raise
    return sorted(alias for alias, v in aliases(mlflow_client, name).items() if v == version)


def _put_back(mlflow_client: Any, name: str, version: str, before: dict[str, str], names: Iterable[str]) -> None:
    try:
        now = aliases(mlflow_client, name)
        for alias in names:
            if now.get(alias) == version and before.get(alias) != version:
                if alias in before:
                    _set_alias(mlflow_client, name, alias, before[alias])
                else:
                    mlflow_client.delete_registered_model_alias(name, alias)
                logger.info(f"registry: put {name}@{alias} back to {before.get(alias, '(none)')}")
    except Exception as exc:  # reported here; the caller raises the original error
        logger.warning(f"registry: could not put aliases of {name} back ({exc}); check `radpipe models {name}`")


# -------------------------------------------------------------------------------- promote, rollback


@dataclass(frozen=True)
class AliasMove:
    """What :func:`promote` or :func:`rollback` did."""

    name: str
    alias: str
    version: str
    replaced: str | None
    """The version the alias pointed at before (now ``previous-<alias>`` after a promote)."""
    previous: str | None
    """What ``previous-<alias>`` points at afterwards (what the next rollback would restore)."""
    changed: bool = True

    def describe(self) -> str:
        if not self.changed:
            return f"{self.name}@{self.alias} is already version {self.version}; nothing moved"
        was = f"version {self.replaced}" if self.replaced else "(none)"
        kept = (
            f"; {self.name}@{previous_alias(self.alias)} = version {self.previous}"
            if self.previous
            else f"; no {previous_alias(self.alias)} left"
        )
        return f"{self.name}@{self.alias}: {was} -> version {self.version}{kept}"


def _stamp(mlflow_client: Any, name: str, version: str, key: str, note: str = "") -> None:
    text = f"{_now()} by {_actor()}" + (f" ({note})" if note else "")
    mlflow_client.set_model_version_tag(name, version, key, text)


def promote(
    mlflow_client: Any,
    name: str,
    to_alias: str = CHAMPION,
    *,
    version: str | None = None,
    from_alias: str | None = None,
    force: bool = False,
) -> AliasMove:
    """Point ``to_alias`` at a version (given, or the one ``from_alias`` points at) and remember the one it
    replaces as ``previous-<to_alias>``. Refuses failed or incomplete versions unless ``force``."""
    if (version is None) == (from_alias is None):
        raise RegistryError("say which version to promote: give exactly one of --version N or --from ALIAS")
    check_alias(to_alias)
    require_model(mlflow_client, name)
    current = aliases(mlflow_client, name)
    if from_alias is not None:
        if from_alias not in current:
            have = ", ".join(f"{a}={v}" for a, v in sorted(current.items())) or "none"
            raise RegistryError(f"{name} has no alias {from_alias!r} (its aliases: {have})")
        version = current[from_alias]
    version = str(version).removeprefix("v").removeprefix("V")
    if not version.isdigit():
        raise RegistryError(f"--version takes a version number, got {version!r}")
    chosen = get_version(mlflow_client, name, version)
    problems = unfit_reasons(chosen)
    if problems and not force:
        raise RegistryError(
            f"{name} version {version} cannot become {to_alias}: {'; '.join(problems)}. "
            "Pass --force to promote it anyway (recorded on the version)"
        )
    replaced = current.get(to_alias)
    if replaced == version:
        return AliasMove(name, to_alias, version, replaced, current.get(previous_alias(to_alias)), changed=False)
    if replaced is not None:
        history = [v for v in _history(mlflow_client, name, to_alias) if v != replaced] + [replaced]
        _set_history(mlflow_client, name, to_alias, history)
        _set_alias(mlflow_client, name, previous_alias(to_alias), replaced)
    note = f"from version {replaced}" if replaced else "first"
    if force and problems:
        note += "; FORCED despite: " + "; ".join(problems)
    _stamp(mlflow_client, name, version, f"radpipe.promoted.{to_alias}", note)
    _set_alias(mlflow_client, name, to_alias, version)  # last: the move itself
    logger.info(f"registry: {name}@{to_alias} -> version {version}" + (f" (was {replaced})" if replaced else ""))
    return AliasMove(name, to_alias, version, replaced, replaced or current.get(previous_alias(to_alias)))


def rollback(mlflow_client: Any, name: str, alias: str = CHAMPION) -> AliasMove:
    """Point ``alias`` back at the version it held before the last promote; step back again on a second call."""
    check_alias(alias)
    require_model(mlflow_client, name)
    current = aliases(mlflow_client, name)
    now = current.get(alias)
    if now is None:
        raise RegistryError(f"{name} has no {alias!r} alias, so there is nothing to roll back")
    history = _history(mlflow_client, name, alias)
    target = current.get(previous_alias(alias))
    if target is None or target == now:  # a promote interrupted between its two alias moves
        earlier = [v for v in history if v != now]
        target = earlier[-1] if earlier else None
    if target is None:
        raise RegistryError(
            f"{name}@{alias} is version {now} and there is no previous {alias} to roll back to (radpipe remembers "
            f"the {alias} each `radpipe promote` replaces). Choose a version yourself: "
            f"radpipe promote {name} --version N --to {alias}"
        )
    get_version(mlflow_client, name, target)  # still there?
    if target in history:
        history = history[: len(history) - 1 - history[::-1].index(target)]
    earlier = [v for v in history if v not in (target, now)]
    new_previous = earlier[-1] if earlier else None
    _set_history(mlflow_client, name, alias, history)
    _stamp(mlflow_client, name, now, f"radpipe.rolled_back.{alias}", f"back to version {target}")
    _set_alias(mlflow_client, name, alias, target)
    if new_previous is not None:
        _set_alias(mlflow_client, name, previous_alias(alias), new_previous)
    else:
        mlflow_client.delete_registered_model_alias(name, previous_alias(alias))
    logger.info(f"registry: {name}@{alias} rolled back: version {now} -> {target}")
    return AliasMove(name, alias, target, now, new_previous)


# ------------------------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    registration: str
    gate: str
    test_accuracy: str
    test_macro_f1: str
    candidate: str
    created: str
    run_id: str
    gate_reasons: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _created(timestamp_ms: int | None) -> str:
    if not timestamp_ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M")


def list_versions(mlflow_client: Any, name: str) -> list[VersionRow]:
    """Every version of ``name`` with its aliases and key metrics, newest first."""
    require_model(mlflow_client, name)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases(mlflow_client, name).items()):
        by_version.setdefault(version, []).append(alias)
    rows = []
    for v in all_versions(mlflow_client, name):
        tags = v.tags or {}
        rows.append(
            VersionRow(
                version=str(v.version),
                aliases=by_version.get(str(v.version), []),
                registration=tags.get(REGISTRATION_TAG, "-"),
                gate=tags.get(GATE_TAG, "-"),
                test_accuracy=tags.get("radpipe.test_accuracy", "-"),
                test_macro_f1=tags.get("radpipe.test_macro_f1", "-"),
                candidate=tags.get("radpipe.candidate", "-"),
                created=_created(v.creation_timestamp),
                run_id=v.run_id or "-",
                gate_reasons=tags.get(GATE_REASONS_TAG, ""),
            )
        )
    return rows


def list_models(mlflow_client: Any) -> list[tuple[str, dict[str, str]]]:
    """(name, aliases) of every registered model, by name."""
    models = mlflow_client.search_registered_models(max_results=1000)
    return sorted(((m.name, {str(a): str(v) for a, v in m.aliases.items()}) for m in models), key=lambda m: m[0])


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain left-aligned columns, as ``kubectl get`` prints them."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines)


def versions_table(rows: list[VersionRow]) -> str:
    headers = ["VERSION", "ALIASES", "GATE", "REGISTRATION", "ACCURACY", "MACRO-F1", "CANDIDATE", "CREATED (UTC)"]
    body = [
        [
            r.version,
            ",".join(r.aliases) or "-",
            r.gate,
            r.registration,
            r.test_accuracy,
            r.test_macro_f1,
            r.candidate,
            r.created,
        ]
        for r in rows
    ]
    return table(headers, body)
