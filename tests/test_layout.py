"""The package layout: every Python sub-package is installed (pyproject's explicit package list)."""

from __future__ import annotations

import tomllib

from conftest import REPO


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = config["package-dir"]
    listed = set(config["packages"])
    found = set()
    for package, folder in package_dir.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    missing = sorted(found - listed)
    assert not missing, f"add these to [tool.setuptools].packages in pyproject.toml: {missing}"


def test_product_code_never_names_the_shared_fixtures() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("radpipe", "components", "pipelines", "serving")
        for path in (REPO / folder).rglob("*.py")
        if "../shared" in path.read_text() or "shared/weights" in path.read_text()
    ]
    assert not offenders, f"product code must not depend on ../shared: {offenders}"
