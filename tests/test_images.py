"""images/: each Dockerfile is lint-clean and pinned, the build context holds what they copy, and each
image holds what its code imports.

Without Docker: an image's Python content is its requirements.lock (installed with --no-deps), so a clean
virtual environment holding exactly that lock (images/lock.py, hard links of the tested packages) is
checked: every module the stage's code imports, at any depth and inside functions, must import there, and
nothing else is present. The images themselves are built and run by tests/test_containers.py
(``make test-containers``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from radpipe.images import BUILD_SPECS, IMAGES, STAGE_IMAGES, USER_ID
from radpipe.pipelines.compile import COMPILED_PIPELINE
from radpipe.pipelines.training_pipeline import STAGES

from conftest import REPO

IMAGES_DIR = REPO / "images"
HADOLINT = REPO / ".tools" / "bin" / "hadolint"
DOCKERFILES = sorted(REPO / path for path in {dockerfile for dockerfile, _ in BUILD_SPECS.values()})
_spec = importlib.util.spec_from_file_location("image_lock", IMAGES_DIR / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)  # type: ignore[union-attr]

# What each image runs: the modules whose imports (transitively through radpipe) must all resolve there.
ENTRY_MODULES = {
    "ingest": ["radpipe.components.ingest", "kfp.dsl.executor_main"],
    "prepare-base": ["radpipe.components.prepare_base", "kfp.dsl.executor_main"],
    "train": ["radpipe.components.train", "kfp.dsl.executor_main"],
    "evaluate-and-register": [
        "radpipe.components.evaluate_and_register",
        "radpipe.deployment",
        "radpipe.gradcam",
        "kfp.dsl.executor_main",
    ],
    "serving": ["radpipe.serving", "radpipe.classifier", "radpipe.gradcam"],
    "mlflow": ["mlflow.server", "mlflow.store.artifact.s3_artifact_repo", "boto3"],
}


def kserve_installed() -> bool:
    return importlib.util.find_spec("kserve") is not None


def needs_image_env(image: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        image == "serving" and not kserve_installed(),
        reason="the serving image's lock is made from an environment with kserve installed (the `serve` extra); "
        "this .venv has none",
    )


def test_every_image_has_a_dockerfile_target_requirements_and_a_lock() -> None:
    assert set(BUILD_SPECS) == set(IMAGES)
    assert {p.relative_to(REPO).as_posix() for p in REPO.glob("images/**/Dockerfile")} == {
        dockerfile for dockerfile, _ in BUILD_SPECS.values()
    }
    for name, (dockerfile, target) in BUILD_SPECS.items():
        text = (REPO / dockerfile).read_text()
        assert not target or re.search(rf"^FROM \S+ AS {target}$", text, re.MULTILINE), f"{dockerfile}: no {target}"
        for file in ("requirements.txt", "requirements.lock"):
            assert (IMAGES_DIR / name / file).is_file(), f"images/{name}/{file} is missing"


def test_stage_images_are_the_components_images_and_the_compiled_pipeline_names_them() -> None:
    assert {stage: image for stage, (_, image) in STAGES.items()} == STAGE_IMAGES
    spec = next(yaml.safe_load_all(COMPILED_PIPELINE.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    named = {name.removeprefix("exec-"): e["container"]["image"].rsplit(":", 1)[0] for name, e in executors.items()}
    assert named == STAGE_IMAGES


def test_hadolint_passes_every_dockerfile() -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: run `make tools` (make test does it first)")
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and hadolint is live: a Dockerfile with classic mistakes fails it.
    bad = subprocess.run(
        [str(HADOLINT), "-"], input="FROM python:latest\nRUN pip install requests\n", capture_output=True, text=True
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout and "DL3013" in bad.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_takes_a_pinned_base_needs_no_registry_runs_non_root_and_installs_its_lock(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    # BASE_IMAGE: the pinned python slim image by default, any other (a local base) by --build-arg.
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11[\w.-]*-bookworm@sha256:[0-9a-f]{64}", default), default
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert stages and all(base in ("${BASE_IMAGE}", *(name for _, name in stages)) for base, _ in stages), stages
    # No frontend image to pull (`# syntax=` needs a registry), no BuildKit-only syntax (the classic builder).
    assert not re.search(r"(?im)^#\s*syntax=", text) and "--mount=" not in text and "<<" not in text
    assert f"USER {USER_ID}:{USER_ID}" in text and text.count("\nUSER ") == 1
    assert "pip install --no-cache-dir --no-deps -r /tmp/requirements.lock" in text
    assert not re.search(r"(?i)^\s*(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", text, re.MULTILINE)
    if dockerfile.parent.name == "images":
        assert "COPY images/${IMAGE}/requirements.lock" in text
        # KFP's launcher stages artifacts at /s3, /minio, /gcs inside the task's container (LocalPathForURI).
        assert "chown radpipe:radpipe /s3 /minio /gcs" in text
        assert 'io.radpipe.source-digest="${SOURCE_DIGEST}"' in text


def test_build_context_holds_what_the_dockerfiles_copy_and_nothing_else() -> None:
    """.dockerignore as the docker SDK applies it (which, like both of Docker's builders, ignores a wildcard
    re-include under an excluded folder)."""
    from docker.utils.build import exclude_paths

    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    context = exclude_paths(str(REPO), patterns)
    for name in IMAGES:
        assert f"images/{name}/requirements.lock" in context
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in package_dirs.values():
        assert f"{folder}/__init__.py" in context
    assert {"pyproject.toml", "README.md"} <= context
    leaked = {p for p in context if p.split("/")[0] in (".git", ".venv", ".tools", ".radpipe", "tests", "examples")}
    assert not leaked and not {p for p in context if p.endswith((".pyc", "requirements.txt", ".sh"))}


def test_image_pins_agree_with_the_project_pins() -> None:
    project = {
        canonicalize_name(r.name): r
        for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    }
    for requirements in IMAGES_DIR.glob("*/requirements.txt"):
        for requirement in lock.read_requirements(requirements):
            (pin,) = list(requirement.specifier)
            assert pin.operator == "==", f"{requirements}: pin {requirement} exactly"
            declared = project.get(canonicalize_name(requirement.name))
            if declared is not None:
                assert declared.specifier.contains(pin.version), f"{requirements}: {requirement} vs {declared}"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_lock_is_current(image: str) -> None:
    if image == "serving" and not kserve_installed():
        pytest.skip("the serving image's lock needs kserve installed (the `serve` extra); this .venv has none")
    result = subprocess.run(
        [sys.executable, str(IMAGES_DIR / "lock.py"), "--check", image], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_ingest_image_needs_no_tensorflow() -> None:
    names = {canonicalize_name(r.name) for r in lock.read_lock(IMAGES_DIR / "ingest")}
    assert not {n for n in names if n.startswith(("tensorflow", "keras", "torch"))}
    assert "mlflow-skinny" in names and "mlflow" not in names


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def imports_of(entries: list[str]) -> dict[str, set[str]]:
    """Every module the radpipe modules reachable from ``entries`` import (including inside functions), and
    those radpipe modules themselves, as {module: names imported from it}."""
    found: dict[str, set[str]] = {}
    queue, seen = list(entries), set()
    while queue:
        module = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        if module.split(".")[0] != "radpipe":
            found.setdefault(module, set())
            continue
        path = _module_file(module)
        if path is None:
            continue
        found.setdefault(module, set())  # radpipe's own modules must import there too
        if path.name == "__init__.py" and module in entries:  # an entry package: all its modules count
            queue.extend(f"{module}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                queue.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base]).strip(".")
                if base.split(".")[0] == "radpipe":
                    queue.append(base)
                    queue.extend(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
                else:
                    queue.append(base)
                    found.setdefault(base, set()).update(a.name for a in node.names if a.name != "*")
    return {m: n for m, n in found.items() if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"}


CHECK_SCRIPT = """
import importlib, json, sys
failures = []
for module, names in json.loads(sys.argv[1]).items():
    try:
        imported = importlib.import_module(module)
    except Exception as exc:
        failures.append(f"import {module}: {type(exc).__name__}: {exc}")
        continue
    for name in names:
        if not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except Exception as exc:
                failures.append(f"from {module} import {name}: {type(exc).__name__}: {exc}")
print(json.dumps(failures))
"""


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_environment_imports_everything_its_code_imports(image: str, tmp_path: Path) -> None:
    if image == "serving" and not (REPO / "serving" / "__init__.py").exists():
        pytest.skip("serving/ (radpipe.serving) is not in this checkout yet")
    if image == "serving" and not kserve_installed():
        pytest.skip("kserve (the `serve` extra) is not installed, so its files cannot go into a clean venv")
    wanted = imports_of(ENTRY_MODULES[image])
    assert wanted, f"found no imports for {image}"
    python = lock.build_clean_venv(IMAGES_DIR / image, tmp_path / "venv", with_radpipe=image != "mlflow")
    result = subprocess.run(
        [str(python), "-c", CHECK_SCRIPT, json.dumps({m: sorted(n) for m, n in wanted.items()})],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, f"images/{image} lacks packages its code imports:\n" + "\n".join(failures)


def test_clean_venv_really_is_clean(tmp_path: Path) -> None:
    """The ingest environment cannot import what only other images have: the check above can fail."""
    python = lock.build_clean_venv(IMAGES_DIR / "ingest", tmp_path / "venv")
    probe = (
        "import importlib.util as u; print([m for m in ('tensorflow', 'sklearn', 'pytest', 'moto') if u.find_spec(m)])"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
