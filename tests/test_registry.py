"""radpipe.registry and `radpipe promote / rollback / models` against a real MLflow server.

Versions here point at empty runs (no Keras model): the registry's rules do not depend on what a version
holds, and these tests stay fast. The evaluate-and-register stage's own tests register real models.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from radpipe import registry
from radpipe.cli import main
from radpipe.errors import RegistryError
from radpipe.registration import register

from conftest import MlflowServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as running:
        yield running.url


@pytest.fixture
def client(server: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    return mlflow.MlflowClient(server)


def new_run(client) -> str:  # type: ignore[no-untyped-def]
    experiment = client.get_experiment_by_name("registry-test")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("registry-test")
    return client.create_run(experiment_id).info.run_id


def add_version(client, name: str, gate: str = "passed", complete: bool = True, accuracy: str = "0.9000") -> str:  # type: ignore[no-untyped-def]
    """A version as the stage registers one: pending with all tags, then complete (or left pending)."""
    run_id = new_run(client)
    tags = {
        registry.GATE_TAG: gate,
        registry.GATE_REASONS_TAG: "macro-F1 0.400 < 0.6" if gate != "passed" else "all checks passed",
        "radpipe.test_accuracy": accuracy,
        "radpipe.test_macro_f1": accuracy,
        "radpipe.candidate": "default",
    }
    version = registry.create_version(client, name, f"runs:/{run_id}/model", run_id, tags, "test version")
    if complete:
        registry.mark_complete(client, name, version)
    return version


def aliases(client, name: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return registry.aliases(client, name)


def test_the_first_passing_version_becomes_champion_later_ones_only_challenger(client) -> None:  # type: ignore[no-untyped-def]
    first = add_version(client, "policy")
    assert registry.move_gate_aliases(client, "policy", first) == ["challenger", "champion"]
    second = add_version(client, "policy")
    assert registry.move_gate_aliases(client, "policy", second) == ["challenger"]
    assert aliases(client, "policy") == {"champion": first, "challenger": second}


def test_promote_remembers_the_champion_and_rollback_returns_step_by_step(client, capsys) -> None:  # type: ignore[no-untyped-def]
    v1 = add_version(client, "chest")
    registry.move_gate_aliases(client, "chest", v1)
    v2 = add_version(client, "chest")
    registry.move_gate_aliases(client, "chest", v2)

    assert main(["promote", "chest", "--from", "challenger"]) == 0
    assert "chest@champion: version 1 -> version 2; chest@previous-champion = version 1" in capsys.readouterr().out
    assert aliases(client, "chest") == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    v3 = add_version(client, "chest")
    assert main(["promote", "chest", "--version", v3]) == 0
    assert aliases(client, "chest")["champion"] == "3" and aliases(client, "chest")["previous-champion"] == "2"
    audit = client.get_model_version("chest", "3").tags["radpipe.promoted.champion"]
    assert "from version 2" in audit and " by " in audit

    assert main(["promote", "chest", "--version", "3"]) == 0  # already champion: a no-op, said so
    assert "already version 3; nothing moved" in capsys.readouterr().out

    assert main(["rollback", "chest"]) == 0
    assert aliases(client, "chest")["champion"] == "2" and aliases(client, "chest")["previous-champion"] == "1"
    assert "rolled back" not in client.get_model_version("chest", "2").tags.get("radpipe.rolled_back.champion", "")
    assert "back to version 2" in client.get_model_version("chest", "3").tags["radpipe.rolled_back.champion"]
    assert main(["rollback", "chest"]) == 0
    assert aliases(client, "chest")["champion"] == "1" and "previous-champion" not in aliases(client, "chest")
    capsys.readouterr()
    assert main(["rollback", "chest"]) == 2
    err = capsys.readouterr().err
    assert "error: chest@champion is version 1 and there is no previous champion to roll back to" in err
    assert "radpipe promote chest --version N --to champion" in err
    assert aliases(client, "chest")["champion"] == "1"


def test_rollback_survives_a_promote_interrupted_between_its_alias_moves(client) -> None:  # type: ignore[no-untyped-def]
    v1 = add_version(client, "halfway")
    registry.move_gate_aliases(client, "halfway", v1)
    v2 = add_version(client, "halfway")
    registry.promote(client, "halfway", version=v2)
    # As if a later promote of v3 had died after remembering v2 but before moving the champion itself:
    add_version(client, "halfway")
    client.set_registered_model_alias("halfway", "previous-champion", v2)
    client.set_registered_model_tag("halfway", "radpipe.history.champion", json.dumps([v1, v2]))
    move = registry.rollback(client, "halfway")
    assert (move.version, move.replaced) == (v1, v2)
    assert aliases(client, "halfway")["champion"] == v1


def test_stage_names_work_as_aliases(client, capsys) -> None:  # type: ignore[no-untyped-def]
    v1 = add_version(client, "staged")
    registry.move_gate_aliases(client, "staged", v1, champion_alias="production", challenger_alias="staging")
    v2 = add_version(client, "staged")
    registry.move_gate_aliases(client, "staged", v2, champion_alias="production", challenger_alias="staging")
    assert aliases(client, "staged") == {"production": "1", "staging": "2"}
    assert main(["promote", "staged", "--from", "staging", "--to", "production"]) == 0
    assert aliases(client, "staged")["production"] == "2"
    assert main(["rollback", "staged", "--alias", "production"]) == 0
    assert aliases(client, "staged")["production"] == "1"


def test_promote_refuses_a_version_that_failed_the_gate_or_never_completed(client, capsys) -> None:  # type: ignore[no-untyped-def]
    good = add_version(client, "careful")
    registry.move_gate_aliases(client, "careful", good)
    failed = add_version(client, "careful", gate="failed")
    pending = add_version(client, "careful", complete=False)

    assert main(["promote", "careful", "--version", failed]) == 2
    err = capsys.readouterr().err
    assert "version 2 cannot become champion: it failed the gate (macro-F1 0.400 < 0.6)" in err and "--force" in err
    assert main(["promote", "careful", "--version", pending, "--to", "challenger"]) == 2
    assert "its registration is pending" in capsys.readouterr().err
    assert aliases(client, "careful") == {"champion": good, "challenger": good}

    assert main(["promote", "careful", "--version", failed, "--force"]) == 0
    assert aliases(client, "careful")["champion"] == failed
    assert (
        "FORCED despite: it failed the gate"
        in client.get_model_version("careful", failed).tags["radpipe.promoted.champion"]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "nope", "--version", "1"], "no registered model named 'nope'"),
        (["promote", "errs", "--version", "9"], "errs has no version 9; `radpipe models errs` lists its versions"),
        (["promote", "errs", "--from", "staging"], "no alias 'staging' (its aliases: challenger=1, champion=1)"),
        (["promote", "errs", "--version", "1", "--to", "latest"], "'latest' is not a usable alias"),
        (["promote", "errs", "--version", "1", "--to", "previous-champion"], "kept by radpipe for rollback"),
        (["promote", "errs", "--version", "one"], "--version takes a version number, got 'one'"),
        (["rollback", "errs", "--alias", "production"], "errs has no 'production' alias"),
        (["models", "nope"], "no registered model named 'nope'"),
    ],
)
def test_registry_commands_explain_what_is_wrong(client, capsys, argv: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    if not registry.aliases(client, "errs"):
        registry.move_gate_aliases(client, "errs", add_version(client, "errs"))
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_promote_needs_exactly_one_source(client, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):  # argparse: --version and --from are mutually exclusive and one is required
        main(["promote", "errs"])
    assert "one of the arguments --version --from is required" in capsys.readouterr().err


def test_models_lists_versions_aliases_and_metrics(client, capsys) -> None:  # type: ignore[no-untyped-def]
    v1 = add_version(client, "listed", accuracy="0.8125")
    registry.move_gate_aliases(client, "listed", v1)
    add_version(client, "listed", gate="failed", accuracy="0.5000")
    add_version(client, "listed", complete=False)
    capsys.readouterr()
    assert main(["models", "listed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "VERSION",
        "ALIASES",
        "GATE",
        "REGISTRATION",
        "ACCURACY",
        "MACRO-F1",
        "CANDIDATE",
        "CREATED",
        "(UTC)",
    ]
    assert lines[1].split()[:4] == ["3", "-", "passed", "pending"]
    assert lines[2].split()[:5] == ["2", "-", "failed", "complete", "0.5000"]
    assert lines[3].split()[:5] == ["1", "challenger,champion", "passed", "complete", "0.8125"]

    assert main(["models", "listed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["3", "2", "1"] and rows[2]["aliases"] == ["challenger", "champion"]
    assert rows[1]["gate_reasons"] == "macro-F1 0.400 < 0.6"

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "listed" in out and "champion=1" in out


def test_a_failure_between_registering_and_aliasing_marks_the_version_and_moves_nothing(client) -> None:  # type: ignore[no-untyped-def]
    v1 = add_version(client, "safe")
    registry.move_gate_aliases(client, "safe", v1)
    run_id = new_run(client)

    def publish(version: str) -> None:
        raise OSError(f"injected: the report for version {version} could not be written")

    with pytest.raises(OSError, match="injected"):
        register(client, "safe", f"runs:/{run_id}/model", run_id, {registry.GATE_TAG: "passed"}, "", True, publish)
    assert aliases(client, "safe") == {"champion": v1, "challenger": v1}
    tags = client.get_model_version("safe", "2").tags
    assert tags[registry.REGISTRATION_TAG] == "failed"
    assert "injected: the report for version 2" in tags[registry.REGISTRATION_ERROR_TAG]
    assert registry.unfit_reasons(client.get_model_version("safe", "2"))


def test_mlflow_going_down_mid_registration_moves_no_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server process is stopped after the version exists and before any alias moves."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with MlflowServer(tmp_path) as server:
        mlflow.set_tracking_uri(server.url)
        client = mlflow.MlflowClient(server.url)
        v1 = add_version(client, "outage")
        registry.move_gate_aliases(client, "outage", v1)
        run_id = new_run(client)
        with pytest.raises(RegistryError) as raised:
            register(
                client,
                "outage",
                f"runs:/{run_id}/model",
                run_id,
                {registry.GATE_TAG: "passed"},
                "",
                True,
                publish=lambda version: server.stop(),
            )
        message = str(raised.value)
        assert f"MLflow at {server.url} failed while registering outage version 2" in message
        assert "No alias moved to it and the version stays 'pending'" in message
        server.start()
        assert aliases(client, "outage") == {"champion": v1, "challenger": v1}
        stranded = client.get_model_version("outage", "2")
        assert stranded.tags[registry.REGISTRATION_TAG] == "pending"
        assert registry.unfit_reasons(stranded) == ["its registration is pending"]


@pytest.mark.parametrize("attempt", range(3))  # races are probabilistic: several rounds, each on a fresh model
def test_concurrent_registrations_each_get_a_version_and_aliases_end_consistent(server: str, attempt: int) -> None:
    """Six pipeline runs register at once (threads, each with its own client), four of them passing."""
    import mlflow

    name = f"busy-{attempt}"

    mlflow.set_tracking_uri(server)
    outcomes = [True, True, False, True, True, False]
    start = threading.Barrier(len(outcomes))
    results: list[object] = [None] * len(outcomes)

    run_ids = [new_run(mlflow.MlflowClient(server)) for _ in outcomes]

    def one_run(i: int) -> None:
        client = mlflow.MlflowClient(server)
        run_id = run_ids[i]
        rng = random.Random(i)
        try:
            start.wait(timeout=60)
            results[i] = register(
                client,
                name,
                f"runs:/{run_id}/model",
                run_id,
                {registry.GATE_TAG: "passed" if outcomes[i] else "failed"},
                "",
                outcomes[i],
                publish=lambda version: time.sleep(rng.uniform(0, 0.3)),  # card/report writing takes a while
            )
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(len(outcomes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    versions = sorted(int(r.version) for r in results)  # type: ignore[union-attr]
    assert versions == list(range(1, len(outcomes) + 1))  # each run its own version
    client = mlflow.MlflowClient(server)
    every = {v.version: v.tags for v in client.search_model_versions(f"name='{name}'")}
    assert all(tags[registry.REGISTRATION_TAG] == "complete" for tags in every.values())
    passing = {int(r.version) for r, ok in zip(results, outcomes, strict=True) if ok}  # type: ignore[union-attr]
    final = aliases(client, name)
    assert set(final) == {"champion", "challenger"}
    assert int(final["challenger"]) == max(passing)  # the newest passing version, whatever the interleaving
    assert int(final["champion"]) in passing
