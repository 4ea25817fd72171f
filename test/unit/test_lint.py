"""The layering contract (cri and dockerapi independent; pkg knows neither), ruff and mypy --strict."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["lint-imports"],
        ["ruff", "check", "narwhal", "pkg", "cri", "dockerapi", "hack", "test"],
        ["mypy", "narwhal", "pkg", "cri", "dockerapi"],
    ],
    ids=["import-layers", "ruff", "mypy"],
)
def test_lint(command: list[str]) -> None:
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
