"""The local Better Stack stand-in: an OTLP/HTTP ingest server backed by SQLite.

It follows Better Stack's documented OTLP ingest contract (README, "Pointing at Better Stack"): one server hosts several
"sources", the bearer token picks the source, 200 `{}` / 401 / 413 / 400 as Better Stack answers,
plus loopback-only control hooks for tests (faults, stats, health) and a read-only `/query`.

Decoding runs on worker threads and inserting on one writer thread, so the event loop stays free
and SQLite sees a single writer; each accepted request is one committed transaction before the 200
goes out, and nothing from a rejected request is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pideai_otel import _process
from pideai_otel._net import listening_socket
from pideai_otel.local import store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4390
DEFAULT_TOKEN = "local-dev-token"
DEFAULT_SOURCE = "default"
# Better Stack's documented limit: 10 MiB compressed per request.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Bound on what a body may inflate to; OTLP protobuf compresses ~5-10x, so 8x the wire limit
# accepts any honest batch while a zip bomb stops at a bounded allocation.
INFLATE_FACTOR = 8
READY_PREFIX = "standin ready on "

_T = TypeVar("_T")


def data_dir() -> Path:
    return Path(os.environ.get("PIDEAI_OTEL_DATA_DIR") or ".pideai-otel")


def default_db_path() -> Path:
    return data_dir() / "standin.sqlite3"


def default_sources() -> dict[str, str]:
    return {DEFAULT_SOURCE: os.environ.get("PIDEAI_STANDIN_TOKEN") or DEFAULT_TOKEN}


@dataclass(frozen=True)
class Fault:
    """An injected outage: answer `status` (with Retry-After) and/or hold each request `stall` s."""

    status: int | None = None
    retry_after: float | None = None
    stall: float | None = None
    until: float | None = None  # time.monotonic() deadline; None = until cleared

    def active(self) -> bool:
        return self.until is None or time.monotonic() < self.until

    def describe(self) -> dict[str, Any]:
        left = None if self.until is None else max(0.0, round(self.until - time.monotonic(), 3))
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "stall": self.stall,
            "seconds_left": left,
        }


def parse_fault(document: Any) -> Fault | None:
    """Validate a /_standin/fault body; `{}` means clear."""
    if not isinstance(document, dict):
        raise ValueError('fault must be a JSON object, e.g. {"status": 503, "seconds": 60}')
    unknown = set(document) - {"status", "retry_after", "stall", "seconds"}
    if unknown:
        raise ValueError(f"unknown fault keys {sorted(unknown)}; use status, retry_after, stall, seconds")
    if not document:
        return None
    status = document.get("status")
    if status is not None and (
        not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599
    ):
        raise ValueError(f"status must be an HTTP error code 400-599, got {status!r}")
    numbers: dict[str, float | None] = {}
    for key in ("retry_after", "stall", "seconds"):
        value = document.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise ValueError(f"{key} must be a number of seconds >= 0, got {value!r}")
        numbers[key] = None if value is None else float(value)
    if status is None and numbers["stall"] is None:
        raise ValueError("a fault needs a status, a stall, or both")
    seconds = numbers["seconds"]
    return Fault(
        status=status,
        retry_after=numbers["retry_after"],
        stall=numbers["stall"],
        until=None if seconds is None else time.monotonic() + seconds,
    )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _loopback_only() -> Response:
    return JSONResponse({"message": "query and control hooks answer loopback clients only"}, status_code=403)


class StandIn:
    """The ASGI application and its state (tokens, fault, writer thread)."""

    def __init__(
        self,
        db_path: Path,
        sources: Mapping[str, str],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not sources:
            raise ValueError("the stand-in needs at least one source (name=token)")
        self.db_path = Path(db_path)
        self.sources = dict(sources)
        self._source_by_token = {token: name for name, token in self.sources.items()}
        if len(self._source_by_token) != len(self.sources):
            raise ValueError("each source needs its own token: the token is what picks the source")
        self.max_body_bytes = max_body_bytes
        self.max_inflated_bytes = max_body_bytes * INFLATE_FACTOR
        self.fault: Fault | None = None
        self._writer: store.Writer | None = None
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="standin-writer")
        self._decode_pool = ThreadPoolExecutor(2, thread_name_prefix="standin-decoder")
        self._read_pool = ThreadPoolExecutor(2, thread_name_prefix="standin-reader")
        self.app = Starlette(
            routes=[
                Route("/v1/{signal}", self._ingest, methods=["POST"]),
                Route("/query", self._query, methods=["POST"]),
                Route("/_standin/fault", self._set_fault, methods=["POST"]),
                Route("/_standin/stats", self._stats, methods=["GET"]),
                Route("/_standin/health", self._health, methods=["GET"]),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._writer = await self._write(store.Writer, self.db_path)
        try:
            yield
        finally:
            writer, self._writer = self._writer, None
            await self._write(writer.close)
            self._write_pool.shutdown(wait=True)
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            self._read_pool.shutdown(wait=False, cancel_futures=True)

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, fn, *args)

    # --- ingest ----------------------------------------------------------------------------

    async def _ingest(self, request: Request) -> Response:
        received_ns = time.time_ns()
        path = request.url.path
        signal_name = request.path_params["signal"]
        content_type = request.headers.get("content-type", "")
        encoding = request.headers.get("content-encoding", "")
        source = self._source_for(request.headers.get("authorization"))

        async def answer(
            status: int, body: dict[str, Any], size: int = 0, headers: dict[str, str] | None = None
        ) -> Response:
            row = store.request_row(
                source, path, status, content_type, encoding, size, received_ns, error=body.get("message")
            )
            assert self._writer is not None
            await self._write(self._writer.record_request, row)
            return JSONResponse(body, status_code=status, headers=headers)

        if signal_name not in store.SIGNALS:
            return await answer(404, {"message": "Not Found: use /v1/traces, /v1/logs or /v1/metrics"})
        fault = self.fault
        if fault is not None and fault.active():
            if fault.stall:
                await asyncio.sleep(fault.stall)
            if fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(math.ceil(fault.retry_after))
                return await answer(
                    fault.status, {"message": f"injected fault: HTTP {fault.status}"}, headers=headers
                )
        if source is None:
            return await answer(401, {"message": "Unauthorized"})
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await answer(413, self._too_large_body(), int(declared))
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return await answer(413, self._too_large_body(), size)
            chunks.append(chunk)
        body = b"".join(chunks)
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(
                self._decode_pool,
                self._decode,
                signal_name,
                body,
                content_type,
                encoding,
                source,
                received_ns,
            )
        except store.TooLarge as exc:
            return await answer(413, {"message": f"Payload Too Large: {exc}"}, len(body))
        except store.DecodeError as exc:
            status = 415 if str(exc).startswith("unsupported Content-Type") else 400
            return await answer(status, {"message": str(exc)}, len(body))
        assert self._writer is not None
        row = store.request_row(source, path, 200, content_type, encoding, len(body), received_ns, len(rows))
        try:
            await self._write(self._writer.store, signal_name, rows, row)
        except sqlite3.Error as exc:
            # Nothing was stored (the transaction rolled back): a retryable answer, so no data is lost.
            return await answer(503, {"message": f"storage error: {exc}"}, len(body))
        return JSONResponse({})

    def _too_large_body(self) -> dict[str, Any]:
        return {"message": f"Payload Too Large: the limit is {self.max_body_bytes} bytes per request"}

    def _decode(
        self, signal_name: str, body: bytes, content_type: str, encoding: str, source: str, received_ns: int
    ) -> list[store.Row]:
        """Runs on a decode thread (SQLite releases the GIL, so decoding overlaps the writer)."""
        raw = store.inflate(body, encoding, self.max_inflated_bytes)
        return store.decode_rows(signal_name, raw, content_type, source, received_ns)

    def _source_for(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._source_by_token.get(token.strip())

    # --- query and control -----------------------------------------------------------------

    async def _not_found(self, request: Request) -> Response:
        # Recorded, so a misconfigured exporter (wrong path) shows up in the requests table.
        declared = request.headers.get("content-length", "")
        row = store.request_row(
            self._source_for(request.headers.get("authorization")),
            request.url.path,
            404,
            request.headers.get("content-type"),
            request.headers.get("content-encoding"),
            int(declared) if declared.isdigit() else 0,
            time.time_ns(),
            error="Not Found",
        )
        assert self._writer is not None
        await self._write(self._writer.record_request, row)
        return JSONResponse({"message": "Not Found"}, status_code=404)

    async def _query(self, request: Request) -> Response:
        if not _is_loopback(request.client.host if request.client else None):
            return _loopback_only()
        sql = (await request.body()).decode("utf-8", errors="replace")

        def run() -> store.QueryResult:
            with contextlib.closing(store.open_reader(self.db_path)) as conn:
                return store.run_query(conn, sql)

        try:
            result = await asyncio.get_running_loop().run_in_executor(self._read_pool, run)
        except store.QueryError as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse(result.to_json())

    async def _set_fault(self, request: Request) -> Response:
        if not _is_loopback(request.client.host if request.client else None):
            return _loopback_only()
        try:
            self.fault = parse_fault(json.loads(await request.body() or b"{}"))
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse({"fault": self.fault.describe() if self.fault else None})

    async def _stats(self, request: Request) -> Response:
        if not _is_loopback(request.client.host if request.client else None):
            return _loopback_only()
        stats = await asyncio.get_running_loop().run_in_executor(self._read_pool, self.read_stats)
        fault = self.fault
        stats["fault"] = fault.describe() if fault is not None and fault.active() else None
        return JSONResponse(stats)

    def read_stats(self) -> dict[str, Any]:
        """Counts from the database itself, so they survive restarts and match what is stored."""
        records: dict[str, dict[str, int]] = {
            name: {"spans": 0, "logs": 0, "metrics": 0} for name in self.sources
        }
        requests: dict[str, dict[str, dict[str, int]]] = {}
        responses: dict[str, int] = {}
        with contextlib.closing(store.open_reader(self.db_path)) as conn:
            for table in ("spans", "logs", "metrics"):
                for source, count in conn.execute(f"SELECT source, count(*) FROM {table} GROUP BY source"):
                    records.setdefault(source, {"spans": 0, "logs": 0, "metrics": 0})[table] = count
            query = "SELECT coalesce(source, ''), path, status, count(*) FROM requests GROUP BY 1, 2, 3"
            for source, path, status, count in conn.execute(query):
                signal_name = path.rsplit("/", 1)[-1]
                by_status = requests.setdefault(source or "(none)", {}).setdefault(signal_name, {})
                by_status[str(status)] = count
                responses[str(status)] = responses.get(str(status), 0) + count
        return {"records": records, "requests": requests, "responses": responses}

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "sources": sorted(self.sources)})


def create_app(
    db_path: Path, sources: Mapping[str, str], *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Starlette:
    """The stand-in as an ASGI app (serve it with uvicorn, or use `serve`)."""
    return StandIn(db_path, sources, max_body_bytes=max_body_bytes).app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._announce()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a busy port is a clear error and port 0 works."""
    return listening_socket(host, port, backlog=2048)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    db_path: Path | None = None,
    sources: Mapping[str, str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Run the stand-in in the foreground until SIGINT/SIGTERM."""
    standin = StandIn(
        db_path or default_db_path(), sources or default_sources(), max_body_bytes=max_body_bytes
    )
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]

    def announce() -> None:
        names = ", ".join(sorted(standin.sources))
        print(f"{READY_PREFIX}{_url(host, bound_port)}", file=sys.stderr, flush=True)
        print(f"  db {standin.db_path}; sources: {names}", file=sys.stderr, flush=True)

    config = uvicorn.Config(
        standin.app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Keep-alive connections from the collector must not hold a shutdown open for long.
        timeout_graceful_shutdown=3,
    )
    try:
        _Server(config, announce).run(sockets=[sock])
    finally:
        sock.close()


# --- test helper -----------------------------------------------------------------------------


class StandInProcess:
    """The stand-in as a subprocess on a free loopback port, for tests.

    The port is chosen at the first start and kept across `restart()`, so a collector pointed at
    `.url` keeps working; the database file is kept too.
    """

    def __init__(
        self,
        tmp_path: Path | str,
        sources: Mapping[str, str] | None = None,
        *,
        db_path: Path | str | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        startup_timeout: float = 30.0,
    ) -> None:
        self.tmp_path = Path(tmp_path)
        self.sources = dict(sources) if sources else {DEFAULT_SOURCE: "tok-default"}
        self.db_path = Path(db_path) if db_path else self.tmp_path / "standin.sqlite3"
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.startup_timeout = startup_timeout
        self.log_path = self.tmp_path / f"standin-{id(self):x}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(timeout=30.0)

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the stand-in has not been started yet; call start() first")
        return _url(self.host, self.port)

    def token(self, source: str = DEFAULT_SOURCE) -> str:
        return self.sources[source]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> StandInProcess:
        if self.running:
            return self
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pideai_otel.local.cli", "standin",
            "--host", self.host, "--port", str(self.port), "--db", str(self.db_path),
            "--max-body-bytes", str(self.max_body_bytes),
        ]  # fmt: skip
        for name, token in self.sources.items():
            command += ["--source", f"{name}={token}"]
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + self.startup_timeout
        pattern = re.compile(re.escape(READY_PREFIX) + r"http://\[?[^\s\]]+\]?:(\d+)")
        while time.monotonic() < deadline:
            match = pattern.search(self._log_since(offset))
            if match:
                self.port = int(match.group(1))
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = self._log_since(offset)[-2000:]
        self.kill()
        raise RuntimeError(f"stand-in did not become ready (log {self.log_path}):\n{tail}")

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait (graceful: in-flight requests finish); SIGKILL if it overstays."""
        _process.terminate(self._proc, timeout)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like; committed requests are still on disk."""
        _process.kill(self._proc)
        self._proc = None

    def restart(self) -> StandInProcess:
        self.stop()
        return self.start()

    def fault(self, **fault: Any) -> dict[str, Any]:
        """Inject a fault, e.g. `fault(status=503, seconds=60)`; `fault()` clears it."""
        response = self._client.post(f"{self.url}/_standin/fault", json=fault)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        response = self._client.get(f"{self.url}/_standin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def query(self, sql: str) -> list[dict[str, Any]]:
        response = self._client.post(f"{self.url}/query", content=sql.encode())
        if response.status_code != 200:
            raise RuntimeError(f"query failed ({response.status_code}): {response.text}")
        result = response.json()
        return [dict(zip(result["columns"], row)) for row in result["rows"]]

    def wait_for(
        self,
        sql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> list[dict[str, Any]]:
        """Poll `sql` until `predicate(rows)` holds (default: any row); return the rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(sql)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout:g} s, {sql!r} still returns {rows[:5]!r}")
            time.sleep(interval)

    def __enter__(self) -> StandInProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._client.close()
