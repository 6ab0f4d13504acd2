"""P3: the app when the collector is down.

Latency: two complete demo stacks (pideai_otel.demo.stack.DemoStack) run side by side, one with
the collector and one whose services export to a port where nothing listens. Orders are placed
alternately on the two (ABAB..., the first of each pair alternating too), each timed on the client,
in rounds of pairs; the figures are p50 and p99 of all down-stack orders over all up-stack orders,
the per-round p50 ratios, and the services' CPU per order (from /proc) in each stack.

Memory: a fresh process runs `init_telemetry` against a dead endpoint (real OTLP/gRPC exporter,
default settings) and emits 100,000 spans and 100,000 log records (one of each per iteration,
inside tenant_context); RSS is sampled throughout and compared with the RSS after start-up.

    python -m benchmarks.p3_collector_down rss --endpoint http://127.0.0.1:PORT --n 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Result, Row, child_env, free_port, load, median, percentile, proc_cpu_seconds, proc_rss_mib

RSS_LIMIT_MIB = 50.0


# -- the emitting process (memory) ------------------------------------------------------------------
def emit_rss(endpoint: str, n: int) -> dict[str, Any]:
    import logging
    import os

    import pideai_otel

    handle = pideai_otel.init_telemetry(service_name="bench-rss", endpoint=endpoint, shutdown_timeout=2.0)
    tracer = handle.tracer_provider.get_tracer("bench") if handle.tracer_provider else None
    assert tracer is not None
    log = logging.getLogger("bench.rss")
    pid = os.getpid()

    def burst(count: int, offset: int) -> None:
        with pideai_otel.tenant_context(store_id="store-lima", user_id="user-42"):
            for i in range(offset, offset + count):
                with tracer.start_as_current_span("process order") as span:
                    span.set_attribute("order.items", 3)
                    span.set_attribute("url.path", f"/orders/ord-{i}")
                    log.info("order %s placed", i, extra={"order.total": 12.5, "payment.method": "card"})

    burst(2_000, 0)  # warm up: imports, caches, first exporter retries
    time.sleep(1.0)
    baseline = proc_rss_mib(pid)
    samples = [baseline]
    started = time.monotonic()
    step = 5_000
    for offset in range(0, n, step):
        burst(min(step, n - offset), offset)
        samples.append(proc_rss_mib(pid))
    emit_seconds = time.monotonic() - started
    time.sleep(2.0)  # let the exporters' retries and the bridge settle
    samples.append(proc_rss_mib(pid))
    bridge = getattr(handle, "_parts", None)
    dropped = getattr(getattr(bridge, "handler", None), "dropped", None)
    shutdown_started = time.monotonic()
    handle.shutdown()
    return {
        "n": n, "baseline_mib": baseline, "peak_mib": max(samples), "final_mib": samples[-1],
        "growth_peak_mib": max(samples) - baseline, "growth_final_mib": samples[-1] - baseline,
        "emit_seconds": emit_seconds, "us_per_span_and_log": emit_seconds / n * 1e6,
        "bridge_dropped": dropped, "shutdown_seconds": time.monotonic() - shutdown_started,
    }  # fmt: skip


def _start_rss(log: Any) -> subprocess.Popen[str]:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.p3_collector_down", "rss", "--endpoint", endpoint, "--n", "100000"],
        env=child_env(), stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip


def _finish_rss(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"the RSS process failed (exit {proc.returncode}); see benchmarks/results/workers.log")
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- latency ---------------------------------------------------------------------------------------
def _service_cpu(stack: Any) -> float:
    """CPU seconds used so far by the stack's three services (DemoStack keeps its processes private)."""
    from pideai_otel.demo.stack import SERVICES

    return sum(proc_cpu_seconds(stack._procs[name].process.pid) for name in SERVICES)


def _latencies(up: Any, down: Any, rounds: int, pairs: int) -> dict[str, Any]:
    """`rounds` rounds of `pairs` order pairs; in each pair both stacks get one order, the first alternating."""
    import httpx

    stacks = {"up": up, "down": down}
    times: dict[str, list[list[float]]] = {"up": [], "down": []}
    failures = {"up": 0, "down": 0}
    with httpx.Client() as c_up, httpx.Client() as c_down:
        clients = {"up": c_up, "down": c_down}
        for name in ("up", "down"):  # warm up both: connections, imports, first exports
            for i in range(10):
                stacks[name].place_order(f"store-{i % 3}", f"user-{i}", client=clients[name])
        cpu0 = {name: _service_cpu(stack) for name, stack in stacks.items()}
        for r in range(rounds):
            for name in stacks:
                times[name].append([])
            for i in range(pairs):
                for name in (("up", "down") if i % 2 == 0 else ("down", "up")):
                    started = time.perf_counter()
                    _, response = stacks[name].place_order(f"store-{i % 3}", f"user-{i % 50}", client=clients[name])
                    elapsed = time.perf_counter() - started
                    if response.status_code == 201:
                        times[name][r].append(elapsed * 1000)
                    else:
                        failures[name] += 1
        cpu = {name: (_service_cpu(stack) - cpu0[name]) / (rounds * pairs) * 1000 for name, stack in stacks.items()}
    return {"times": times, "failures": failures, "service_cpu_ms_per_order": cpu}


def run(quick: bool, log: Any) -> Result:
    from pideai_otel.demo.stack import DemoStack

    result = Result("P3", "collector down: app latency and memory")
    result.load_before = load()
    rounds, pairs = (3, 30) if quick else (10, 100)
    # The memory run only measures RSS, so it overlaps the stacks' start-up; it ends before any
    # latency is measured.
    rss_proc = _start_rss(log)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="pideai-bench-p3-") as tmp,
            DemoStack(Path(tmp) / "up", with_collector=True) as up,
            DemoStack(Path(tmp) / "down", with_collector=False) as down,
        ):
            rss = _finish_rss(rss_proc)
            measured = _latencies(up, down, rounds, pairs)
    finally:
        if rss_proc.poll() is None:
            rss_proc.kill()
            rss_proc.wait()
    times = measured["times"]
    pooled = {name: [t for block in blocks for t in block] for name, blocks in times.items()}
    stats = {name: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "n": len(v)} for name, v in pooled.items()}
    round_p50_ratios = [percentile(d, 50) / percentile(u, 50) for u, d in zip(times["up"], times["down"]) if u and d]
    for q in ("p50", "p99"):
        mine, base = stats["down"][f"{q}_ms"], stats["up"][f"{q}_ms"]
        ratio = mine / base
        result.rows.append(Row(f"order latency {q}, collector down (all {stats['down']['n']} orders)", f"{mine:.1f} ms",
                               f"{base:.1f} ms (up)", ratio, "<= 1.05x", ratio <= 1.05))  # fmt: skip
    result.rows.append(Row(
        f"order latency p50 ratio per round: median of {len(round_p50_ratios)} (min-max)",
        f"{median(round_p50_ratios):.2f}x ({min(round_p50_ratios):.2f}-{max(round_p50_ratios):.2f})",
    ))  # fmt: skip
    cpu = measured["service_cpu_ms_per_order"]
    result.rows.append(Row("services' CPU per order, collector down", f"{cpu['down']:.1f} ms", f"{cpu['up']:.1f} ms (up)", cpu["down"] / cpu["up"]))
    failures = measured["failures"]
    if any(failures.values()):
        result.notes.append(f"orders that did not answer 201: up {failures['up']}, down {failures['down']} (excluded).")
    result.rows.append(Row(
        f"RSS growth, {rss['n']:,} spans + {rss['n']:,} logs, collector down (peak / end)",
        f"{rss['growth_peak_mib']:.1f} / {rss['growth_final_mib']:.1f} MiB", f"{rss['baseline_mib']:.0f} MiB at start",
        None, f"< {RSS_LIMIT_MIB:.0f} MB", rss["growth_peak_mib"] < RSS_LIMIT_MIB,
    ))  # fmt: skip
    result.notes.append(
        f"collector down: {rss['us_per_span_and_log']:.0f} µs per span+log pair on the caller while the queues are full; "
        f"shutdown took {rss['shutdown_seconds']:.1f} s (bounded at 2 s); the bridge dropped {rss['bridge_dropped']} records."
    )
    result.load_after = load()
    result.data = {"rounds": rounds, "pairs_per_round": pairs, "latency": stats, "round_p50_ratios": round_p50_ratios,
                   "service_cpu_ms_per_order": cpu, "raw_ms": times, "rss": rss}  # fmt: skip
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.p3_collector_down")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rss = sub.add_parser("rss")
    rss.add_argument("--endpoint", required=True)
    rss.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(json.dumps(emit_rss(args.endpoint, args.n)))


if __name__ == "__main__":
    main(sys.argv[1:])
