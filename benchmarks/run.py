"""Run the benchmarks, print the table, write benchmarks/results/latest.json.

    .venv/bin/python -m benchmarks [--quick] [--only P1,P2] [--markdown]

`--markdown` also rewrites benchmarks/results.md (the committed copy of the latest full run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime

from benchmarks._common import BENCH_DIR, Result, load, markdown_table

BENCHMARKS = {
    "P1": "benchmarks.p1_spans",
    "P2": "benchmarks.p2_logs",
    "P3": "benchmarks.p3_collector_down",
    "P4": "benchmarks.p4_capacity",
    "P5": "benchmarks.p5_freshness",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter loads (< 3 minutes)")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. P1,P2")
    parser.add_argument("--markdown", action="store_true", help="also rewrite benchmarks/results.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    wanted = [b.strip().upper() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    unknown = [b for b in wanted if b not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    results: list[Result] = []
    # Worker and server output goes to one log file, not the terminal.
    with open(out_dir / "workers.log", "w") as log:
        for bench in wanted:
            print(f"[{bench}] running (load {load()})...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            module = importlib.import_module(BENCHMARKS[bench])
            try:
                result = module.run(args.quick, log)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the others' results
                traceback.print_exc()
                result = Result(bench, BENCHMARKS[bench], skipped=f"failed: {type(exc).__name__}: {exc}")
            result.seconds = round(time.monotonic() - t0, 1)
            results.append(result)
            print(markdown_table([result]), file=sys.stderr, flush=True)
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "seconds": round(time.monotonic() - started, 1),
        "commit": _commit(),
        "results": [r.to_json() for r in results],
    }
    (out_dir / "latest.json").write_text(json.dumps(document, indent=1, default=str))
    table = markdown_table(results)
    print(table)
    for result in results:
        for note in result.notes:
            print(f"- {result.bench}: {note}")
        print(f"- {result.bench}: load before {result.load_before}, after {result.load_after}, {result.seconds} s")
    print(f"total {document['seconds']} s; JSON in {out_dir / 'latest.json'}")
    if args.markdown:
        _write_markdown(document, results)
    return 0


def _commit() -> str:
    """The checkout's commit, marked `+changes` when tracked files differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _write_markdown(document: dict, results: list[Result]) -> None:
    lines = [
        "# Latest benchmark results",
        "",
        (
            f"Measured {document['when']} at commit {document['commit']} on {document['machine']['cpus']} CPUs, Python "
            f"{document['machine']['python']} ({'quick' if document['quick'] else 'full'} run, "
            f"{document['seconds']} s). Regenerate with `.venv/bin/python -m benchmarks --markdown`; "
            "what each figure means is in README.md."
        ),
        "",
        markdown_table(results),
        "",
    ]
    for result in results:
        lines.append(f"- **{result.bench}** ({result.title}): load average before {result.load_before}, "
                     f"after {result.load_after}; {result.seconds} s.")
        lines.extend(f"  - {note}" for note in result.notes)
    (BENCH_DIR / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
