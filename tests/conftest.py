"""Shared fixtures. Real labelled text lives in ../shared/data next to the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actstore import Store

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when the clone lacks it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: these tests read the real text sets in ../shared/data")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "db")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
