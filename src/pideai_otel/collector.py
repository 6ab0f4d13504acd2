"""The sidecar collector: build it, validate and run `otel-collector.yaml`, and report its status.

`ensure_built()` builds the binary from `collector/manifest.yaml` with the OpenTelemetry Collector
Builder (cached by the manifest's hash, so an unchanged manifest never rebuilds);
`CollectorProcess` runs it on free loopback ports for tests; `status()` reads its own metrics.
CLI: `pideai-otel collector build|validate|run|status`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from pideai_otel import _process
from pideai_otel.cli import CommandError

BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
BUILDER_VERSION = "v0.161.0"
BINARY_ENV = "PIDEAI_OTELCOL_BIN"
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "collector" / "manifest.yaml"
CONFIG = REPO_ROOT / "otel-collector.yaml"
# Where the Go installer puts Go when it is not on PATH (e.g. a non-login shell).
GO_FALLBACK = Path("/usr/local/go/bin/go")

# Defaults for `collector run` and `validate`: the embedded local stand-in (`pideai-otel standin`).
LOCAL_INGEST_URL = "http://127.0.0.1:4390"
LOCAL_TOKEN = "local-dev-token"
LOCAL_STORAGE_DIR = Path(".pideai-otel") / "collector-queue"

SIGNALS = ("spans", "metric_points", "log_records")


class BuildError(CommandError):
    """The collector binary could not be built or found."""


# --- build ---------------------------------------------------------------------------------------


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pideai-otel" / "collector"


def manifest_hash(manifest: Path = MANIFEST) -> str:
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def _dist_name(manifest: Path) -> str:
    match = re.search(r"^\s+name:\s*([\w.-]+)\s*$", manifest.read_text(), re.MULTILINE)
    return match.group(1) if match else "otelcol-pideai"


def cached_binary(manifest: Path = MANIFEST) -> Path:
    """Where the binary for this manifest lives once built (it may not exist yet)."""
    return cache_root() / manifest_hash(manifest)[:16] / _dist_name(manifest)


def ensure_built(manifest: Path = MANIFEST, *, log: IO[str] | None = None) -> Path:
    """Return the collector binary for `manifest`, building it on first use.

    `PIDEAI_OTELCOL_BIN` overrides (e.g. the official otelcol-contrib). Concurrent callers (parallel
    test processes) serialise on a lock file and build once. Progress goes to `log` (stderr).
    """
    out = log or sys.stderr
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BuildError(
                f"{BINARY_ENV}={override} is not an executable file; point it at a built collector or unset it"
            )
        return path
    if not manifest.is_file():
        raise BuildError(f"collector manifest {manifest} not found; run from a pideai-otel checkout")
    binary = cached_binary(manifest)
    if _is_executable(binary):
        return binary
    binary.parent.parent.mkdir(parents=True, exist_ok=True)
    lock_path = binary.parent.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        if not _try_lock(lock):
            print(
                f"pideai-otel: waiting for another process building the collector ({lock_path})", file=out, flush=True
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_executable(binary):  # built by whoever held the lock
            return binary
        _build(manifest, binary, out)
    return binary


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _go_executable() -> str:
    found = shutil.which("go") or (str(GO_FALLBACK) if _is_executable(GO_FALLBACK) else None)
    if not found:
        raise BuildError(
            "`go` not found on PATH; install Go >= 1.26 to build the collector, "
            f"or set {BINARY_ENV} to an otelcol-contrib v0.161.0 binary"
        )
    return found


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Build with the machine's Go; never download a toolchain.
    env["GOTOOLCHAIN"] = "local"
    env.setdefault("CGO_ENABLED", "0")
    return env


def _stream(
    command: list[str], *, cwd: Path, env: Mapping[str, str], out: IO[str], prefix: str
) -> tuple[int, list[str]]:
    """Run `command`, copying each output line to `out`; return the exit code and the last lines."""
    tail: list[str] = []
    with subprocess.Popen(
        command, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace",
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"{prefix}{line.rstrip()}", file=out, flush=True)
            tail = (tail + [line.rstrip()])[-20:]
        return proc.wait(), tail


def _builder(go: str, out: IO[str]) -> Path:
    tools = cache_root() / "tools" / BUILDER_VERSION
    builder = tools / "builder"
    if _is_executable(builder):
        return builder
    tools.mkdir(parents=True, exist_ok=True)
    print(f"pideai-otel: installing the collector builder {BUILDER_VERSION} into {tools}", file=out, flush=True)
    env = {**_go_env(), "GOBIN": str(tools)}
    code, tail = _stream(
        [go, "install", f"{BUILDER_MODULE}@{BUILDER_VERSION}"], cwd=tools, env=env, out=out, prefix="  go: "
    )
    if code != 0 or not _is_executable(builder):
        raise BuildError(
            f"`go install {BUILDER_MODULE}@{BUILDER_VERSION}` failed (exit {code}): {' | '.join(tail[-3:])}"
        )
    return builder


def _build(manifest: Path, binary: Path, out: IO[str]) -> None:
    go = _go_executable()
    builder = _builder(go, out)
    staging = binary.parent.with_name(f"{binary.parent.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        # The manifest's output_path is relative, so building from a staging copy keeps the
        # checkout clean and lets a half-finished build be thrown away.
        shutil.copyfile(manifest, staging / "manifest.yaml")
        print(
            f"pideai-otel: building the collector from {manifest} (sha256 {manifest_hash(manifest)[:16]}); "
            "a cold build takes several minutes",
            file=out, flush=True,
        )  # fmt: skip
        started = time.monotonic()
        code, tail = _stream(
            [str(builder), "--config=manifest.yaml"], cwd=staging, env=_go_env(), out=out, prefix="  builder: "
        )
        built = staging / "_build" / binary.name
        if code != 0 or not _is_executable(built):
            raise BuildError(f"the collector build failed (exit {code}): {' | '.join(tail[-3:])}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, binary)  # atomic: a reader sees no binary or a whole one
        print(f"pideai-otel: built {binary} in {time.monotonic() - started:.0f} s", file=out, flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- running -------------------------------------------------------------------------------------


def local_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with the Better Stack variables defaulted to the local stand-in."""
    env = dict(os.environ if base is None else base)
    for url_var, token_var in (("BETTERSTACK_INGEST_URL", "BETTERSTACK_SOURCE_TOKEN"),
                               ("BETTERSTACK_ERRORS_INGEST_URL", "BETTERSTACK_ERRORS_SOURCE_TOKEN")):
        url = env.get(url_var, "")
        if url and url != LOCAL_INGEST_URL and not env.get(token_var):
            # Never send the development token to a real Better Stack host.
            raise CommandError(f"{url_var} is set but {token_var} is not; export the source's token")
        if url and not url.startswith(("http://", "https://")):
            raise CommandError(f"{url_var}={url!r} is not a URL; expected https://s<id>.<cluster>.betterstackdata.com")
    env.setdefault("BETTERSTACK_INGEST_URL", LOCAL_INGEST_URL)
    env.setdefault("BETTERSTACK_SOURCE_TOKEN", LOCAL_TOKEN)
    env.setdefault("BETTERSTACK_ERRORS_INGEST_URL", env["BETTERSTACK_INGEST_URL"])
    env.setdefault("BETTERSTACK_ERRORS_SOURCE_TOKEN", env["BETTERSTACK_SOURCE_TOKEN"])
    env.setdefault("OTELCOL_STORAGE_DIR", str(LOCAL_STORAGE_DIR.resolve()))
    return env


def validate(
    binary: Path, config: Path = CONFIG, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `<binary> validate`: builds every pipeline without starting it."""
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        env=local_env(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CollectorProcess:
    """The collector as a subprocess on free loopback ports with its own queue directory.

    `standin_url` is the Better Stack (stand-in) base URL; `tokens` maps "default"/"errors" to source
    tokens; `env` adds or overrides collector environment variables (e.g. OTELCOL_MEMORY_LIMIT_MIB).
    Ports and the queue directory are kept across `restart()`, so a restart resumes the queue.
    The collector's stderr goes to `log_path`, appended across restarts.
    """

    def __init__(
        self,
        tmp_path: Path | str,
        *,
        standin_url: str,
        tokens: Mapping[str, str],
        config: Path = CONFIG,
        binary: Path | None = None,
        startup_timeout: float = 60.0,
        **env: str,
    ) -> None:
        self.tmp_path = Path(tmp_path)
        self.config = config
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.storage_dir = self.tmp_path / "queue"
        self.log_path = self.tmp_path / "collector.log"
        self._base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTELCOL_", "BETTERSTACK_"))},
            "BETTERSTACK_INGEST_URL": standin_url,
            "BETTERSTACK_SOURCE_TOKEN": tokens["default"],
            "BETTERSTACK_ERRORS_INGEST_URL": standin_url,
            "BETTERSTACK_ERRORS_SOURCE_TOKEN": tokens.get("errors", tokens["default"]),
            "OTELCOL_STORAGE_DIR": str(self.storage_dir),
        }
        self._extra_env = env
        self._pick_ports()
        self._started_once = False
        self._proc: subprocess.Popen[bytes] | None = None

    def _pick_ports(self) -> None:
        self.grpc_port, self.http_port, self.health_port, self.metrics_port = (free_port() for _ in range(4))

    @property
    def env(self) -> dict[str, str]:
        """The collector's environment (ports as currently chosen)."""
        return {
            **self._base_env,
            "OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "OTELCOL_METRICS_PORT": str(self.metrics_port),
            **self._extra_env,
        }

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> CollectorProcess:
        if self.running:
            return self
        binary = self.binary or ensure_built()
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        # A port found free can be taken by another process before the collector binds it. The
        # first start then moves to new ports; a restart keeps its ports (clients point at them)
        # and simply tries again.
        for attempt in range(4):
            healthy, tail = self._launch(binary)
            if healthy:
                self._started_once = True
                return self
            if "address already in use" not in tail or attempt == 3:
                break
            if self._started_once:
                time.sleep(0.5)
            else:
                self._pick_ports()
        raise RuntimeError(f"collector did not become healthy (log {self.log_path}):\n{tail}")

    def _launch(self, binary: Path) -> tuple[bool, str]:
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                [str(binary), f"--config={self.config}"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.health_url).status_code == 200:
                        return True, ""
                time.sleep(0.05)
        self.kill()
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return False, log.read().decode(errors="replace")[-3000:]

    def log_text(self) -> str:
        """Everything the collector wrote to stderr so far (all runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful: the queue stays on disk) and wait; SIGKILL if it overstays."""
        _process.terminate(self._proc, timeout)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash. Whatever the receiver acknowledged is already in the disk queue."""
        _process.kill(self._proc)
        self._proc = None

    def restart(self) -> CollectorProcess:
        self.stop()
        return self.start()

    def status(self) -> CollectorStatus:
        return status(self.metrics_url, self.health_url)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.stop()


# --- status --------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for each sample of a Prometheus text exposition."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group("labels") or ""))
        with contextlib.suppress(ValueError):
            yield match.group("name"), labels, float(match.group("value"))


@dataclass
class ExporterStatus:
    # Per data_type (traces / metrics / logs): one persistent queue each, sized in bytes.
    queue_size: dict[str, float] = field(default_factory=dict)
    queue_capacity: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    send_failed: dict[str, float] = field(default_factory=dict)
    enqueue_failed: dict[str, float] = field(default_factory=dict)


@dataclass
class CollectorStatus:
    health_status: int | None
    health: str
    receivers: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    exporters: dict[str, ExporterStatus] = field(default_factory=dict)
    memory_limiter_refused: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "health": {"status": self.health_status, "body": self.health},
            "receivers": self.receivers,
            "exporters": {name: vars(e) for name, e in self.exporters.items()},
            "memory_limiter_refused": self.memory_limiter_refused,
            "errors": self.errors,
        }

    def refused(self, signal_name: str = "log_records") -> float:
        return sum(r.get("refused", {}).get(signal_name, 0.0) for r in self.receivers.values())


def _signal_of(name: str, prefix: str) -> str | None:
    rest = name[len(prefix) :].removesuffix("_total")
    return rest if rest in SIGNALS else None


def status(metrics_url: str, health_url: str, timeout: float = 5.0) -> CollectorStatus:
    """Scrape the collector's health endpoint and its own Prometheus metrics."""
    result = CollectorStatus(health_status=None, health="")
    with httpx.Client(timeout=timeout) as client:
        try:
            response = client.get(health_url)
            result.health_status, result.health = response.status_code, response.text.strip()
        except httpx.HTTPError as exc:
            result.health = f"unreachable: {exc}"
            result.errors.append(f"health {health_url}: {exc}")
        try:
            text = client.get(metrics_url).text
        except httpx.HTTPError as exc:
            result.errors.append(f"metrics {metrics_url}: {exc}")
            return result
    for name, labels, value in parse_prometheus(text):
        for prefix, key in (
            ("otelcol_receiver_accepted_", "accepted"),
            ("otelcol_receiver_refused_", "refused"),
            ("otelcol_receiver_failed_", "failed"),
        ):
            if name.startswith(prefix) and (sig := _signal_of(name, prefix)):
                counts = result.receivers.setdefault(labels.get("receiver", "?"), {}).setdefault(key, {})
                counts[sig] = counts.get(sig, 0.0) + value
        if name.startswith("otelcol_processor_memory_limiter_refused_") and (
            sig := _signal_of(name, "otelcol_processor_memory_limiter_refused_")
        ):
            result.memory_limiter_refused[sig] = result.memory_limiter_refused.get(sig, 0.0) + value
        exporter = labels.get("exporter")
        if not name.startswith("otelcol_exporter_") or exporter is None:
            continue
        entry = result.exporters.setdefault(exporter, ExporterStatus())
        if name == "otelcol_exporter_queue_size":
            entry.queue_size[labels.get("data_type", "?")] = value
        elif name == "otelcol_exporter_queue_capacity":
            entry.queue_capacity[labels.get("data_type", "?")] = value
        for prefix, counts in (
            ("otelcol_exporter_sent_", entry.sent),
            ("otelcol_exporter_send_failed_", entry.send_failed),
            ("otelcol_exporter_enqueue_failed_", entry.enqueue_failed),
        ):
            if name.startswith(prefix) and (sig := _signal_of(name, prefix)):
                counts[sig] = counts.get(sig, 0.0) + value
    return result


def format_status(result: CollectorStatus) -> str:
    def counts(values: Mapping[str, float]) -> str:
        return " ".join(f"{k}={int(v)}" for k, v in sorted(values.items())) or "-"

    lines = [f"health: {result.health_status or 'DOWN'} {result.health}"]
    for name, receiver in sorted(result.receivers.items()):
        lines.append(
            f"receiver {name}: accepted {counts(receiver.get('accepted', {}))}; "
            f"refused {counts(receiver.get('refused', {}))}; failed {counts(receiver.get('failed', {}))}"
        )
    if result.memory_limiter_refused:
        lines.append(f"memory_limiter refused: {counts(result.memory_limiter_refused)}")
    for name, exp in sorted(result.exporters.items()):
        queues = " ".join(
            f"{kind}={int(size)}/{int(exp.queue_capacity.get(kind, 0))}"
            for kind, size in sorted(exp.queue_size.items())
        )
        lines.append(f"exporter {name}:")
        lines.append(f"  queue bytes used/capacity: {queues or '-'}")
        lines.append(
            f"  sent {counts(exp.sent)}; send_failed {counts(exp.send_failed)}; enqueue_failed {counts(exp.enqueue_failed)}"
        )
    lines.extend(f"error: {e}" for e in result.errors)
    return "\n".join(lines)


# --- CLI -----------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("collector", help="build, validate, run or inspect the sidecar collector")
    commands = parser.add_subparsers(dest="collector_command", required=True, metavar="SUBCOMMAND")

    build = commands.add_parser("build", help=_cmd_build.__doc__)
    build.set_defaults(func=_cmd_build)

    check = commands.add_parser("validate", help=_cmd_validate.__doc__)
    check.add_argument("--config", type=Path, default=CONFIG, help="collector config (default: %(default)s)")
    check.set_defaults(func=_cmd_validate)

    run = commands.add_parser("run", help=_cmd_run.__doc__)
    run.add_argument("--config", type=Path, default=CONFIG, help="collector config (default: %(default)s)")
    run.add_argument("--storage-dir", type=Path, help=f"persistent queue directory (default: ./{LOCAL_STORAGE_DIR})")
    run.set_defaults(func=_cmd_run)

    show = commands.add_parser("status", help=_cmd_status.__doc__)
    show.add_argument(
        "--metrics-url", default=None, help="default: http://127.0.0.1:$OTELCOL_METRICS_PORT/metrics (8888)"
    )
    show.add_argument("--health-url", default=None, help="default: http://$OTELCOL_HEALTH_ENDPOINT/ (127.0.0.1:13133)")
    show.add_argument("--json", action="store_true", help="print JSON to stdout")
    show.set_defaults(func=_cmd_status)


def _cmd_build(args: argparse.Namespace) -> int:
    """Build the collector binary from collector/manifest.yaml (cached) and print its path."""
    print(ensure_built())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Validate the collector config with the built binary (Better Stack variables default to the stand-in)."""
    if not args.config.is_file():
        raise CommandError(f"config {args.config} not found; pass --config PATH")
    result = validate(ensure_built(), args.config)
    sys.stderr.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise CommandError(
            f"{args.config} is invalid (see above); fix it and run `pideai-otel collector validate` again"
        )
    print(f"{args.config}: valid", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run the collector in the foreground; without BETTERSTACK_* it sends to the local stand-in."""
    if not args.config.is_file():
        raise CommandError(f"config {args.config} not found; pass --config PATH")
    binary = ensure_built()
    env = local_env()
    if args.storage_dir is not None:
        env["OTELCOL_STORAGE_DIR"] = str(args.storage_dir.resolve())
    if env["BETTERSTACK_INGEST_URL"] == LOCAL_INGEST_URL:
        print(f"pideai-otel: sending to the local stand-in at {LOCAL_INGEST_URL} (set BETTERSTACK_* for Better Stack)",
              file=sys.stderr)  # fmt: skip
    print(f"pideai-otel: queue in {env['OTELCOL_STORAGE_DIR']}", file=sys.stderr, flush=True)
    # Become the collector: signals (Ctrl-C, a supervisor's SIGTERM) reach it directly and its exit
    # code is ours, so it drains and shuts down exactly as when started on its own.
    os.execve(binary, [str(binary), f"--config={args.config}"], env)
    return 0  # pragma: no cover  (execve does not return)


def _cmd_status(args: argparse.Namespace) -> int:
    """Show health, receiver and per-exporter queue/sent/failed counts of a running collector."""
    metrics_url = args.metrics_url or f"http://127.0.0.1:{os.environ.get('OTELCOL_METRICS_PORT', '8888')}/metrics"
    health_url = args.health_url or f"http://{os.environ.get('OTELCOL_HEALTH_ENDPOINT', '127.0.0.1:13133')}/"
    result = status(metrics_url, health_url)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(format_status(result), file=sys.stderr)
    if result.health_status is None and result.errors:
        raise CommandError(f"no collector answers at {health_url}; start one with `pideai-otel collector run`")
    return 0 if result.health_status == 200 else 1
