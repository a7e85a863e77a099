"""Shared fixtures: external test material, databases (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the clone (CI has it; a fresh user clone does not)."""
    env = os.environ.get("NEARFAB_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("external test material ../shared/data is absent (only CI and developers have it)")
    return path
