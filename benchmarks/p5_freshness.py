"""P5: freshness, from `logger.info(...)` in a service to finding the record with the search API.

A process with `init_telemetry` at its defaults exports over OTLP/gRPC to the built collector
(production config), which delivers to the stand-in. The process logs one record with a unique
token, then polls `pideai_otel.local.search.connect(url).find_logs(text=token)` every 20 ms until
it is found; the figure is the time from the log call to the first successful search. Probes are
spaced by a random 0.2-0.8 s, so they fall anywhere within the batching timers. Each record's
`observed_ns` (set by the kit's bridge worker) and `received_ns` (set by the stand-in on arrival)
split the latency into: bridge, SDK batch + collector, and stand-in write + search.

    python -m benchmarks.p5_freshness probe --endpoint http://127.0.0.1:4317 --standin http://127.0.0.1:4390 --n 20
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import Result, Row, child_env, load, median, percentile

TARGET_P95_S = 2.0


def probe(endpoint: str, standin_url: str, n: int) -> dict[str, Any]:
    import logging

    import pideai_otel
    from pideai_otel.local import search

    handle = pideai_otel.init_telemetry(service_name="bench-freshness", endpoint=endpoint)
    log = logging.getLogger("bench.freshness")
    samples: list[dict[str, float]] = []
    missed = 0
    with search.connect(standin_url) as searcher:
        for _ in range(n):
            token = uuid.uuid4().hex
            started_ns = time.time_ns()
            log.info("freshness probe %s", token)
            found: list[dict[str, Any]] = []
            while not found and time.time_ns() - started_ns < 30e9:
                time.sleep(0.02)
                found = searcher.find_logs(text=token, limit=1)
            done_ns = time.time_ns()
            if not found:
                missed += 1
                continue
            record = found[0]
            samples.append({
                "total_s": (done_ns - started_ns) / 1e9,
                "bridge_s": (int(record["observed_ns"]) - started_ns) / 1e9,
                "pipeline_s": (int(record["received_ns"]) - int(record["observed_ns"])) / 1e9,
                "store_and_search_s": (done_ns - int(record["received_ns"])) / 1e9,
            })  # fmt: skip
            time.sleep(random.uniform(0.2, 0.8))
    handle.shutdown()
    return {"samples": samples, "missed": missed}


def run(quick: bool, log: Any) -> Result:
    from pideai_otel.collector import CollectorProcess
    from pideai_otel.local import StandInProcess

    result = Result("P5", "freshness: log call to searchable")
    result.load_before = load()
    n = 10 if quick else 60
    tokens = {"default": "bench-default", "errors": "bench-errors"}
    with (
        tempfile.TemporaryDirectory(prefix="pideai-bench-p5-") as tmp,
        StandInProcess(Path(tmp) / "standin", sources=tokens) as standin,
        CollectorProcess(Path(tmp) / "collector", standin_url=standin.url, tokens=tokens) as collector,
    ):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.p5_freshness", "probe", "--endpoint", collector.grpc_endpoint,
             "--standin", standin.url, "--n", str(n)],
            env=child_env(), stdout=subprocess.PIPE, stderr=log, text=True, timeout=n * 35 + 60, check=False,
        )  # fmt: skip
    result.load_after = load()
    if done.returncode != 0 or not done.stdout.strip():
        result.skipped = f"the probe process failed (exit {done.returncode}); see benchmarks/results/workers.log"
        return result
    report = json.loads(done.stdout.strip().splitlines()[-1])
    samples = report["samples"]
    totals = [s["total_s"] for s in samples]
    p95 = percentile(totals, 95)
    result.rows.append(Row(f"log call -> found by search, p95 of {len(totals)}", f"{p95:.2f} s", "-", None,
                           f"<= {TARGET_P95_S:.0f} s", p95 <= TARGET_P95_S and not report["missed"]))  # fmt: skip
    result.rows.append(Row("  p50 / max", f"{percentile(totals, 50):.2f} / {max(totals):.2f} s"))
    parts = {key: median(s[key] for s in samples) for key in ("bridge_s", "pipeline_s", "store_and_search_s")}
    result.rows.append(Row(
        "  median split: bridge / SDK batch + collector / store + search",
        f"{parts['bridge_s']:.2f} / {parts['pipeline_s']:.2f} / {parts['store_and_search_s']:.2f} s",
    ))  # fmt: skip
    if report["missed"]:
        result.notes.append(f"{report['missed']} probes were not found within 30 s.")
    result.data = {"n": n, **report, "median_split_s": parts}
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.p5_freshness")
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmd = sub.add_parser("probe")
    cmd.add_argument("--endpoint", required=True)
    cmd.add_argument("--standin", required=True)
    cmd.add_argument("--n", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.endpoint, args.standin, args.n)))


if __name__ == "__main__":
    main(sys.argv[1:])
