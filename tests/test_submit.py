"""`make submit`'s script, for real where it can be without a cluster: its arguments, the package it
submits, and a clear error when nothing answers at the KFP address (a closed loopback port)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from radpipe.errors import ConfigError
from radpipe.pipelines import submit
from radpipe.pipelines.compile import COMPILED_PIPELINE
from radpipe.pipelines.training_pipeline import CLUSTER_ENV_CONFIG_MAP, CLUSTER_S3_SECRET

from conftest import free_port


def test_defaults_submit_the_checked_in_package_to_the_port_forwarded_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    args = submit.build_parser().parse_args([])
    assert args.host == "http://localhost:8080" and Path(args.package) == COMPILED_PIPELINE
    assert args.wait and args.experiment == "radpipe"
    assert submit.run_arguments(args) == {}  # the package's own defaults
    monkeypatch.setenv("KFP_HOST", "https://kfp.example.org")
    assert submit.build_parser().parse_args([]).host == "https://kfp.example.org"
    assert submit.run_url("https://kfp.example.org/", "abc") == "https://kfp.example.org/#/runs/details/abc"


def test_config_and_data_become_validated_run_parameters() -> None:
    args = submit.build_parser().parse_args(
        ["--data", "s3://radpipe/data/chest-ct", "--set", "train.epochs=3", "--set", "register.model_name=lungs"]
    )
    arguments = submit.run_arguments(args)
    assert set(arguments) == {"data", "model", "train", "evaluate", "register", "tracking", "candidates"}
    assert arguments["data"]["uri"] == "s3://radpipe/data/chest-ct"
    assert arguments["train"]["epochs"] == 3 and arguments["register"]["model_name"] == "lungs"
    assert arguments["candidates"] == [{"name": "default", "model": {}, "train": {}}]
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        submit.run_arguments(submit.build_parser().parse_args(["--set", "train.epoch=3"]))


def test_the_submitted_package_is_the_cluster_pipeline() -> None:
    from kfp import components

    assert components.load_component_from_file(str(COMPILED_PIPELINE)).name == "radpipe-training"
    pipeline, platform = list(yaml.safe_load_all(COMPILED_PIPELINE.read_text()))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(pipeline["deploymentSpec"]["executors"])
    for config in executors.values():
        assert config["configMapAsEnv"][0]["configMapName"] == CLUSTER_ENV_CONFIG_MAP
        assert config["secretAsEnv"][0]["secretName"] == CLUSTER_S3_SECRET
        assert config["securityContext"]["runAsNonRoot"] is True


def run_submit(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radpipe.pipelines.submit", *argv], capture_output=True, text=True, timeout=120
    )


def test_an_unreachable_kfp_is_a_clear_error() -> None:
    port = free_port()  # bound, then released: nothing listens there
    result = run_submit("--host", f"http://127.0.0.1:{port}", "--no-wait")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}")
    assert "Connection refused" in result.stderr and "port-forward svc/ml-pipeline-ui" in result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr


def test_a_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    result = run_submit("--package", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml does not exist; compile the pipeline first" in result.stderr
