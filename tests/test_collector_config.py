"""The collector config and manifest: valid, consistent with each other, CORS as documented."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from pideai_otel.cli import CommandError
from pideai_otel.collector import (
    CONFIG,
    MANIFEST,
    CollectorProcess,
    free_port,
    local_env,
    validate,
)
from pideai_otel.local import StandInProcess

pytest_plugins = ("test_collector_helpers",)
pytestmark = pytest.mark.collector

KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
# The CLI as installed (`python -m pideai_otel.cli` would load cli.py twice, as __main__ and as a module).
_PIDEAI_OTEL = (sys.executable, "-c", "import sys; from pideai_otel.cli import main; sys.exit(main())")


def _compiled_components(binary: Path) -> dict[str, dict[str, str]]:
    """kind -> {module path: component type} from `<binary> components`."""
    listing = yaml.safe_load(
        subprocess.run([str(binary), "components"], capture_output=True, text=True, check=True).stdout
    )
    return {kind: {entry["module"].split()[0]: entry["name"] for entry in listing.get(kind) or []} for kind in KINDS}


def _config_types_used(config: dict) -> dict[str, set[str]]:
    """kind -> component types referenced by the service section (pipelines and extensions)."""
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    used["extensions"] = {name.split("/")[0] for name in config["service"]["extensions"]}
    connectors = set(config.get("connectors", {}))
    for pipeline in config["service"]["pipelines"].values():
        for name in pipeline["receivers"] + pipeline["exporters"]:
            kind = (
                "connectors" if name in connectors else ("receivers" if name in pipeline["receivers"] else "exporters")
            )
            used[kind].add(name.split("/")[0])
        used["processors"] |= {name.split("/")[0] for name in pipeline.get("processors", [])}
    return used


def test_config_validates(otelcol_bin: Path) -> None:
    result = validate(otelcol_bin, CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    # Canonical names only: a deprecated alias would log a warning here.
    assert "deprecated" not in (result.stdout + result.stderr).lower()


def test_manifest_and_config_list_the_same_components(otelcol_bin: Path) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    config = yaml.safe_load(CONFIG.read_text())
    compiled = _compiled_components(otelcol_bin)
    used = _config_types_used(config)
    for kind in KINDS:
        modules = {entry["gomod"].split()[0] for entry in manifest.get(kind) or []}
        in_manifest = {compiled[kind][module] for module in modules}
        print(f"{kind}: manifest {sorted(in_manifest)}, config uses {sorted(used[kind])}")
        assert in_manifest == used[kind], (
            f"{kind}: manifest-only {in_manifest - used[kind]}, config-only {used[kind] - in_manifest}"
        )
        # Every component defined in the config is wired into the service (no dead blocks).
        defined = {name for name in config.get(kind) or {}}
        wired = {
            name
            for pipeline in config["service"]["pipelines"].values()
            for name in pipeline.get("receivers", []) + pipeline.get("processors", []) + pipeline.get("exporters", [])
        } | set(config["service"]["extensions"])
        assert defined <= wired, f"{kind} defined but unused: {defined - wired}"
    # One release train; providers include env (the default scheme) and file (--config).
    versions = {
        entry["gomod"].split()[1]
        for kind in (*KINDS, "providers")
        for entry in manifest.get(kind) or []
        if "/confmap/" not in entry["gomod"]
    }
    assert versions == {"v0.161.0"}
    providers = {entry["gomod"].split()[0].rsplit("/", 1)[-1] for entry in manifest["providers"]}
    assert {"envprovider", "fileprovider"} <= providers


def test_every_number_in_the_config_has_a_why() -> None:
    """Style rule: each numeric setting carries a comment (on its line or in the block above)."""
    lines = CONFIG.read_text().splitlines()
    assert lines[0].startswith("#") and any("SECURITY" in line for line in lines[:10])
    missing = []
    for index, line in enumerate(lines):
        if line.lstrip().startswith("#") or not re.search(r":\s*(\$\{env:\w+:-)?\d", line):
            continue
        above = lines[max(0, index - 3) : index]
        if "#" not in line and not any(prev.lstrip().startswith("#") for prev in above):
            missing.append(f"{index + 1}: {line.strip()}")
    assert not missing, "numbers without a why:\n" + "\n".join(missing)


def _preflight(collector: CollectorProcess, origin: str) -> httpx.Response:
    return httpx.options(
        f"{collector.http_endpoint}/v1/traces",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=5,
    )


def test_cors_allows_listed_origins_only(make_collector: Callable[..., CollectorProcess]) -> None:
    listed = make_collector(OTELCOL_CORS_ORIGINS="[http://shop.example, http://localhost:5173]")
    allowed = _preflight(listed, "http://localhost:5173")
    print(f"listed origin: {allowed.status_code} {dict(allowed.headers)}")
    assert allowed.status_code in (200, 204)
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:5173"
    assert "content-type" in allowed.headers.get("access-control-allow-headers", "").lower()

    other = _preflight(listed, "http://evil.example")
    print(f"other origin: {other.status_code} {dict(other.headers)}")
    assert "access-control-allow-origin" not in other.headers

    default = make_collector()  # OTELCOL_CORS_ORIGINS unset: no origin at all
    refused = _preflight(default, "http://localhost:5173")
    assert "access-control-allow-origin" not in refused.headers


def test_status_reports_health_receiver_and_exporters(
    make_collector: Callable[..., CollectorProcess],
) -> None:
    from test_collector_helpers import log_record, logs_request, sender_for

    collector = make_collector()
    sender = sender_for(collector)
    try:
        sender.deliver("logs", logs_request([log_record("hello", "INFO", attributes={"tid": "s1"})]))
    finally:
        sender.close()
    result = collector.status()
    print(result.to_json())
    assert result.health_status == 200
    assert result.receivers["otlp"]["accepted"]["log_records"] >= 1
    assert set(result.exporters) == {"otlp_http/default", "otlp_http/errors"}
    assert result.exporters["otlp_http/default"].queue_capacity["logs"] > 0

    cli = subprocess.run(
        [*_PIDEAI_OTEL, "collector", "status", "--metrics-url", collector.metrics_url, "--health-url",
         collector.health_url, "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert '"otlp_http/default"' in cli.stdout


def test_local_defaults_point_at_the_embedded_standin() -> None:
    env = local_env({})
    assert env["BETTERSTACK_INGEST_URL"] == env["BETTERSTACK_ERRORS_INGEST_URL"] == "http://127.0.0.1:4390"
    assert env["BETTERSTACK_SOURCE_TOKEN"] == env["BETTERSTACK_ERRORS_SOURCE_TOKEN"] == "local-dev-token"
    assert env["OTELCOL_STORAGE_DIR"].endswith(".pideai-otel/collector-queue")
    # Explicit settings win.
    assert (
        local_env({"BETTERSTACK_INGEST_URL": "https://s1.example", "BETTERSTACK_SOURCE_TOKEN": "t"})[
            "BETTERSTACK_ERRORS_INGEST_URL"]
        == "https://s1.example"
    )


def test_a_real_source_without_its_token_is_refused_not_sent_the_dev_token() -> None:
    with pytest.raises(CommandError, match="BETTERSTACK_SOURCE_TOKEN is not"):
        local_env({"BETTERSTACK_INGEST_URL": "https://s1.example"})
    with pytest.raises(CommandError, match="is not a URL"):
        local_env({"BETTERSTACK_INGEST_URL": "not-a-url", "BETTERSTACK_SOURCE_TOKEN": "t"})


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_PIDEAI_OTEL, "collector", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def test_cli_validate(otelcol_bin: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PIDEAI_OTELCOL_BIN": str(otelcol_bin)}
    ok = _cli("validate", env=env)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        CONFIG.read_text().replace("memory_limiter:\n    # 1s", "memory_limiter:\n    bogus_key: 1\n    # 1s")
    )
    bad = _cli("validate", "--config", str(broken), env=env)
    print(bad.stderr[-600:])
    assert bad.returncode == 2 and "bogus_key" in bad.stderr and "is invalid" in bad.stderr


def test_cli_run_in_the_foreground(otelcol_bin: Path, standin_process: StandInProcess, tmp_path: Path) -> None:
    from test_collector_helpers import TOKENS, log_record, logs_request, wait_for_ids

    ports = {name: free_port() for name in ("grpc", "http", "health", "metrics")}
    env = {
        **os.environ,
        "PIDEAI_OTELCOL_BIN": str(otelcol_bin),
        "BETTERSTACK_INGEST_URL": standin_process.url,
        "BETTERSTACK_SOURCE_TOKEN": TOKENS["default"],
        "OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "OTELCOL_METRICS_PORT": str(ports["metrics"]),
    }
    proc = subprocess.Popen(
        [*_PIDEAI_OTEL, "collector", "run"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{ports['health']}/", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        response = httpx.post(
            f"http://127.0.0.1:{ports['http']}/v1/logs",
            content=logs_request([log_record("via run", "ERROR", attributes={"tid": "run-1"})]).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=5,
        )
        assert response.status_code == 200
        # Only the default source's variables were set: errors fall back to the same source.
        assert wait_for_ids(standin_process, "logs", {"run-1"}, 30, source="default") == ["run-1"]
        assert (tmp_path / ".pideai-otel" / "collector-queue").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)  # the CLI became the collector (exec): it shuts down cleanly
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    print(output.splitlines()[:2])
    assert proc.returncode == 0, output[-2000:]
    assert "Shutdown complete" in output
