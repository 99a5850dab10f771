"""The import contract holds, and would fail on an import against the direction (even one in a function)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("clinics_project", "clinics", "messaging", "whatsapp", "common", "devtools", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own virtualenv's tool on our own tree
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_project_keeps_its_contracts(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "whatsapp/meta.py",
            "from clinics.models import Clinic",
            "whatsapp is not allowed to import clinics",
        ),
        ("common/fields.py", "import whatsapp.models", "common is not allowed to import whatsapp"),
        (
            "messaging/models.py",
            "from clinics.models import Clinic",
            "messaging is not allowed to import clinics",
        ),
        (
            "whatsapp/meta.py",
            "import messaging.models",
            "whatsapp is not allowed to import messaging",
        ),
        (
            "clinics/services.py",
            "from devtools import fake_graph",
            "Product code never imports the dev tools",
        ),
    ],
)
def test_an_upward_import_breaks_it_even_inside_a_function(tree, module, line, broken):
    with (tree / module).open("a", encoding="utf-8") as source:
        source.write(f"\n\ndef _sneaky() -> None:\n    {line}  # noqa\n")
    result = _lint(tree)
    assert result.returncode == 1
    assert broken in result.stdout
