"""Hermetic tests: no OTEL_* or kit variables leak in from the shell, globals reset per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_PREFIXES = ("OTEL_", "PIDEAI_OTEL_", "BETTERSTACK_", "OTELCOL_")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(_PREFIXES) and name not in ("PIDEAI_OTELCOL_BIN",):
            monkeypatch.delenv(name)
    yield
