"""init / shutdown / exit behaviour, each in a fresh interpreter (the OTel globals are per process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(script: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    return proc, time.monotonic() - started


def test_collector_down_app_unaffected_and_exit_is_bounded() -> None:
    script = f"""
        import logging, time
        import pideai_otel
        from opentelemetry import trace

        seen = []
        class Collect(logging.Handler):
            def emit(self, record): seen.append(record.name)
        logging.getLogger().addHandler(Collect())

        pideai_otel.init_telemetry(service_name="lonely", endpoint="http://127.0.0.1:{_closed_port()}")
        tracer, log = trace.get_tracer("t"), logging.getLogger("app")
        t0 = time.perf_counter()
        for i in range(2000):
            with tracer.start_as_current_span("work"):
                log.info("record %d", i)
        per_call_us = (time.perf_counter() - t0) / 2000 * 1e6
        time.sleep(3)  # let the exporters fail a few times
        assert not [n for n in seen if n.startswith(("opentelemetry", "grpc"))], seen
        print(f"per-iteration {{per_call_us:.1f}} us")
        exit_started = time.monotonic()
        import atexit
        atexit.register(lambda: print(f"exit hook ran", flush=True))
    """
    proc, elapsed = _run(script)
    assert proc.returncode == 0, proc.stderr
    # 3 s of sleep + interpreter start + at most the 5 s shutdown bound, with room for a slow machine.
    assert elapsed < 20, elapsed
    assert "pideai-otel:" in proc.stderr  # the failures were reported...
    assert proc.stderr.count("\n") < 40, proc.stderr  # ...at a limited rate


def test_shutdown_respects_its_deadline_with_no_collector() -> None:
    script = f"""
        import logging, time
        import pideai_otel
        from opentelemetry import trace
        handle = pideai_otel.init_telemetry(service_name="x", endpoint="http://127.0.0.1:{_closed_port()}", export_timeout=30)
        for i in range(500):
            with trace.get_tracer("t").start_as_current_span("s"):
                logging.getLogger("a").warning("w %d", i)
        t0 = time.monotonic()
        ok = handle.shutdown(timeout=1.5)
        print("took", round(time.monotonic() - t0, 2), "ok", ok)
        assert time.monotonic() - t0 < 3.0
        try:
            handle.flush()
        except pideai_otel.TelemetryShutdownError as exc:
            print("after:", exc)
        try:
            pideai_otel.init_telemetry(service_name="again")
        except pideai_otel.TelemetryShutdownError as exc:
            print("again:", exc)
    """
    proc, _ = _run(script)
    assert proc.returncode == 0, proc.stderr
    assert "after: flush() called after shutdown()" in proc.stdout
    assert "again: init_telemetry() after shutdown()" in proc.stdout


def test_sdk_disabled_installs_nothing() -> None:
    script = """
        import logging
        import pideai_otel
        from opentelemetry import trace
        handle = pideai_otel.init_telemetry(service_name="x")
        assert not handle.enabled
        assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "BridgeHandler"]
        assert not trace.get_tracer("t").start_span("s").is_recording()
        with pideai_otel.tenant_context(store_id="s1"):
            assert pideai_otel.current_tenant()["store_id"] == "s1"
        print("disabled ok")
    """
    proc, _ = _run(script, env={"OTEL_SDK_DISABLED": "true"})
    assert proc.returncode == 0, proc.stderr
    assert "disabled ok" in proc.stdout


def test_bad_environment_fails_at_start_naming_the_variable() -> None:
    proc, _ = _run("import pideai_otel; pideai_otel.init_telemetry(service_name='x')",
                   env={"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
    assert proc.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon' is not valid" in proc.stderr
