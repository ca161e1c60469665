"""Fixtures for the verifier tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def code_verifier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from tracedistill.verifiers.code import CodeVerifier

    async with CodeVerifier(workers=2, cache_dir=tmp_path_factory.mktemp("refcache")) as v:
        yield v
