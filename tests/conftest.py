from __future__ import annotations

import os

import pytest

# Progress bars are for people; test logs stay readable without them.
os.environ.setdefault("TRACEDISTILL_PROGRESS", "0")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
