"""Each image's lock file holds every third-party package its code imports (the stub's image has only its own)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from deploy.topology import ROOT


def imported_distributions(src: Path) -> set[str]:
    """The installed distributions that provide the top-level modules imported under `src` (own packages aside)."""
    own = {path.name for path in src.iterdir() if path.is_dir()}
    modules: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - own - set(sys.stdlib_module_names) - {"__future__"}
    providers = packages_distributions()
    return {normalize(dist) for module in third_party for dist in providers.get(module, [module])}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: Path) -> set[str]:
    return {normalize(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==", lock.read_text(), re.M)}


@pytest.mark.parametrize(
    ("src", "lock"),
    [("services/stub/src", "requirements/stub.lock"), ("services/api/src", "requirements/api.lock")],
)
def test_image_lock_covers_the_imports(src: str, lock: str) -> None:
    """A package the code imports but its image's lock lacks would fail only in the container, at start-up."""
    missing = imported_distributions(ROOT / src) - locked(ROOT / lock)
    assert not missing, f"{src} imports {sorted(missing)}, absent from {lock}: add them, then `make lock`"
