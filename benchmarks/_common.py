"""Shared pieces: statistics, the interleaved-rounds harness, result rows, process probes.

A benchmark that compares variants runs each variant in its own long-lived worker subprocess
(OpenTelemetry's globals are per process) and drives them in interleaved rounds: round r runs every
variant once, in an order rotated by r, so slow drift in machine load (other engineers' tests share
these 2 cores) hits every variant alike. Each figure is the median over rounds.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent

# Benchmark-only packages (logfire, pyinstrument, opentelemetry-instrumentation-logging) may live
# outside the project venv so they never leak into the pytest run (logfire registers pytest plugins).
EXTRA_SITE_ENV = "PIDEAI_BENCH_SITE"


# -- statistics ----------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- results -----------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table. `ratio` and `ok` are None when they do not apply."""

    measure: str
    value: str
    baseline: str = "-"
    ratio: float | None = None
    target: str = "-"
    ok: bool | None = None


@dataclass
class Result:
    bench: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**NO**")


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def markdown_table(results: Sequence[Result]) -> str:
    lines = ["| bench | measure | value | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.bench} | {result.title} | skipped: {result.skipped} | | | | |")
            continue
        for row in result.rows:
            lines.append(
                f"| {result.bench} | {row.measure} | {row.value} | {row.baseline} | {fmt_ratio(row.ratio)} "
                f"| {row.target} | {verdict(row.ok)} |"
            )
    return "\n".join(lines)


# -- subprocess environment and probes -------------------------------------------------------------
def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for benchmark subprocesses: no OTEL_/kit settings leak in from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PIDEAI_OTEL_"))}
    paths = [str(REPO_ROOT)]
    if os.environ.get(EXTRA_SITE_ENV):
        paths.append(os.environ[EXTRA_SITE_ENV])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mib(pid: int, key: str = "VmRSS") -> float:
    """Resident set size (VmRSS) or its peak (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_import(module: str) -> str | None:
    """None if `module` imports in a benchmark subprocess, else the reason it does not."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or ["import failed"])[-1]


# -- the worker side ---------------------------------------------------------------------------------
def serve_worker(setup: Callable[[], Callable[[dict[str, Any]], dict[str, Any]]], teardown: Callable[[], None] | None = None) -> None:
    """Run in a worker subprocess: set up, then answer one JSON command per line on the protocol pipe.

    The protocol uses a private copy of stdout; fd 1 is pointed at stderr so anything the code under
    test prints cannot corrupt it.
    """
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        run = setup()
    except Exception as exc:  # noqa: BLE001 - any set-up failure is reported to the runner, which skips the variant
        proto.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("cmd") == "quit":
            break
        proto.write(json.dumps(run(command)) + "\n")
    if teardown is not None:
        teardown()
    proto.write(json.dumps({"bye": True}) + "\n")


# -- the runner side ---------------------------------------------------------------------------------
class Worker:
    """A variant's worker subprocess, spoken to in JSON lines."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None, log: IO[str] | None = None) -> None:
        self.name = name
        self.error: str | None = None
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL,
            env=child_env(env), text=True, bufsize=1, cwd=REPO_ROOT,
        )  # fmt: skip
        hello = self._read()
        if "error" in hello:
            self.error = hello["error"]
            self.close()
        else:
            self.pid = int(hello["pid"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            return {"error": f"worker exited with code {code} before answering"}
        return dict(json.loads(line))

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self, timeout: float = 30.0) -> None:
        if self._proc.poll() is None:
            try:
                if self.error is None:
                    self.ask(cmd="quit")
                self._proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
                self._proc.wait()


def interleaved(workers: Sequence[Worker], rounds: int, warmup: int = 1, **command: Any) -> dict[str, list[dict[str, Any]]]:
    """Run `rounds` rounds; in round r every worker runs once, the order rotated by r (ABC, BCA, CAB...)."""
    if not workers:
        return {}
    for _ in range(warmup):
        for worker in workers:
            worker.ask(cmd="round", **command)
    results: dict[str, list[dict[str, Any]]] = {w.name: [] for w in workers}
    for r in range(rounds):
        shift = r % len(workers)
        for worker in [*workers[shift:], *workers[:shift]]:
            results[worker.name].append(worker.ask(cmd="round", **command))
    return results


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
