"""Shared test switches. `pytest --regenerate` rewrites golden files instead of comparing them."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def pytest_addoption(parser):
    parser.addoption("--regenerate", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture
def golden(request):
    """golden(path, text): compare text with the golden file (unified diff on mismatch), or rewrite it."""
    regenerate = request.config.getoption("--regenerate")

    def check(path: Path, text: str) -> None:
        if regenerate or not path.exists():
            if not regenerate:
                pytest.fail(f"golden file {path.relative_to(REPO)} is missing; run pytest --regenerate and review it")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        expected = path.read_text()
        if expected != text:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                str(path.relative_to(REPO)), "rendered now"))
            pytest.fail(f"output differs from {path.relative_to(REPO)} (pytest --regenerate to accept):\n{diff}")

    return check
