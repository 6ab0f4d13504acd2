"""A thousand hostile requests against the bridge served by `pideai-otel sentry-bridge`.

The server is a real subprocess on loopback, so its memory is measured alone (RSS), apart from
hypothesis and the test client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pideai_otel.sentry.testing import (
    error_event,
    error_payload,
    sign,
    signed_delivery,
    webhook_headers,
)

SECRET = "fuzz-secret-6f1d0c2b9a8e7d6c5b4a3f2e1d0c9b8a"
LIMIT = 64 * 1024
# The installed console script, as users run it (`python -m pideai_otel.cli` would load cli.py twice).
CLI = str(Path(sys.executable).with_name("pideai-otel"))
URL = "/sentry/webhook"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class BridgeProcess:
    """`pideai-otel sentry-bridge` on a free port; stderr goes to a file, read for the ready line."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / "sentry-bridge.log"
        self._args = ["--host", "127.0.0.1", "--port", "0", *args]
        self._env = {**os.environ, "SENTRY_CLIENT_SECRET": SECRET, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> BridgeProcess:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [CLI, "sentry-bridge", *self._args],
                stdout=subprocess.DEVNULL, stderr=log, env=self._env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("sentry-bridge ready on "):
                    self.url = line.rsplit(" ", 1)[1]
                    return self
            if self._proc.poll() is not None:
                raise RuntimeError(f"sentry-bridge exited {self._proc.returncode}:\n{text}")
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"sentry-bridge not ready in 30 s:\n{self.log_path.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __exit__(self, *exc: object) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    # No collector here: the kit's exporter is switched off, the bridge's own counters still count.
    with BridgeProcess(tmp_path, "--max-body-bytes", str(LIMIT), env={"OTEL_SDK_DISABLED": "true"}) as process:
        yield process


# --- strategies: every request here must be refused -----------------------------------------------

def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)
events = st.builds(
    error_event,
    level=st.sampled_from(["fatal", "error", "warning", "info", "debug", "weird"]),
    exc_value=st.text(max_size=200),
    tags=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=10),
    trace_id=st.one_of(st.none(), st.just(TRACE_ID), st.text(max_size=40)),
)
not_an_object = st.one_of(
    st.binary(max_size=2048).map(lambda raw: b"\xff" + raw),  # never UTF-8
    st.lists(st.integers(), max_size=20).map(_json),
    st.text(max_size=200).map(_json),
    st.floats(allow_nan=False).map(_json),
    # Flat objects: `data` can never be the object the documented shape needs.
    st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=8).map(_json),
)


@st.composite
def bad_requests(draw: st.DrawFn) -> tuple[str, int, Any, dict[str, str]]:
    kind = draw(st.sampled_from(["garbage", "forged", "stale", "oversize", "shape", "no-resource"]))
    if kind == "garbage":
        body = draw(st.binary(max_size=4096))
        headers = {"Sentry-Hook-Resource": draw(st.sampled_from(["error", "issue", "event_alert"]))}
        signature = draw(st.one_of(st.none(), header_text, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)))
        if signature is not None:
            headers["Sentry-Hook-Signature"] = signature
        if draw(st.booleans()):
            headers["Sentry-Hook-Timestamp"] = draw(st.one_of(header_text, st.just(str(int(time.time())))))
        return kind, 401, body, headers
    if kind == "forged":
        body, headers = signed_delivery(SECRET, "error", error_payload(draw(events)))
        forgery = draw(st.sampled_from(["other-secret", "truncated", "body-changed", "uppercase-prefix"]))
        if forgery == "other-secret":
            headers["Sentry-Hook-Signature"] = sign(draw(st.text(min_size=1, max_size=30).filter(lambda s: s != SECRET)), body)
        elif forgery == "truncated":
            headers["Sentry-Hook-Signature"] = headers["Sentry-Hook-Signature"][: draw(st.integers(0, 63))]
        elif forgery == "body-changed":
            body = body + b" "
        else:
            headers["Sentry-Hook-Signature"] = "sha256=" + headers["Sentry-Hook-Signature"]
        return kind, 401, body, headers
    if kind == "stale":
        skew = draw(st.floats(min_value=320, max_value=1e9)) * draw(st.sampled_from([-1, 1]))
        body, headers = signed_delivery(SECRET, "error", error_payload(draw(events)), timestamp=time.time() + skew)
        if draw(st.booleans()):
            headers["Sentry-Hook-Timestamp"] = draw(st.sampled_from(["", "nan", "inf", "-inf", "1e400", "soon", "0"]))
        return kind, 401, body, headers
    if kind == "oversize":
        body = b"x" * draw(st.integers(LIMIT + 1, LIMIT * 4))
        headers = webhook_headers(SECRET, body, "error")
        if draw(st.booleans()):  # chunked: no Content-Length to reject early on
            return kind, 413, iter([body[i : i + 8192] for i in range(0, len(body), 8192)]), headers
        return kind, 413, body, headers
    if kind == "shape":
        body = draw(not_an_object)
        return kind, 400, body, webhook_headers(SECRET, body, draw(st.sampled_from(["error", "issue", "event_alert"])))
    body, headers = signed_delivery(SECRET, "error", error_payload(draw(events)))
    del headers["Sentry-Hook-Resource"]
    return kind, 400, body, headers


def valid_delivery() -> tuple[bytes, dict[str, str]]:
    return signed_delivery(SECRET, "error", error_payload(error_event(trace_id=TRACE_ID, span_id="b7ad6b7169203331")))


def test_a_thousand_bad_requests_leave_the_bridge_working_and_bounded(bridge: BridgeProcess) -> None:
    sent = 0

    with httpx.Client(base_url=bridge.url, timeout=10) as client:

        def send(request: tuple[str, int, Any, dict[str, str]]) -> None:
            nonlocal sent
            kind, expected, body, headers = request
            response = client.post(URL, content=body, headers=headers)
            sent += 1
            assert response.status_code == expected, (kind, response.text)

        def hostile(count: int) -> None:
            @settings(
                max_examples=count, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
            )
            @given(bad_requests())
            def run(request: tuple[str, int, Any, dict[str, str]]) -> None:
                send(request)

            run()

        # Warm up (first-use allocations, pymalloc arenas) before taking the baseline.
        hostile(300)
        baseline = bridge.rss_bytes()
        warm_up = sent

        hostile(1000)
        grown = bridge.rss_bytes() - baseline
        assert sent - warm_up >= 1000

        body, headers = valid_delivery()
        response = client.post(URL, content=body, headers=headers)
        assert response.status_code == 200 and response.json() == {"status": "accepted"}
        deadline = time.monotonic() + 5
        while (stats := client.get("/sentry/stats").json()).get("emitted") is None and time.monotonic() < deadline:
            time.sleep(0.05)

    print(f"server RSS grew {grown / 2**20:.2f} MiB over {sent - warm_up} bad requests")
    assert grown < 32 * 1024 * 1024, f"server RSS grew {grown / 2**20:.1f} MiB over {sent - warm_up} bad requests"
    assert stats["requests"] == sent + 1
    assert sum(stats["rejected"].values()) == sent
    assert stats["accepted"] == {"error": 1}
    assert stats["emitted"] == {"correlated": {"error": 1}}
    assert stats["dedupe_entries"] == 1


def test_cli_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_CLIENT_SECRET"}
    result = subprocess.run(
        [CLI, "sentry-bridge", "--port", "0"],
        env={**env, "OTEL_SDK_DISABLED": "true"}, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "SENTRY_CLIENT_SECRET" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
