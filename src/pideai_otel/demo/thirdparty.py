"""Stand-ins for the third parties PideAI calls: Gemini, the WhatsApp Cloud API, a payment gateway.

Each is a Starlette app that answers like the real service (bodies and error shapes included) and
can be scripted: POST /_control/script with a JSON list of outcomes makes the next N calls answer
with those outcomes, in order, then the default ("ok" / "approve") again. An outcome is a name
("429") or an object with a name and parameters ({"outcome": "timeout", "seconds": 5}).

    python -m pideai_otel.demo.thirdparty gemini --port 8701 [--api-key KEY]
    python -m pideai_otel.demo.thirdparty whatsapp --port 8702 [--access-token T] [--webhook-url URL]
    python -m pideai_otel.demo.thirdparty payments --port 8703 [--api-key KEY]

Control endpoints (all apps): POST /_control/script, POST /_control/reset, GET /_control/calls,
GET /_control/health. WhatsApp also: POST /_control/webhook {"url", "app_secret"} and
POST /_control/status {"message_id", "status", "errors"?} (or {"updates": [...]}), which POSTs a
Cloud API status callback to the webhook and answers with the webhook's HTTP status.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import struct
import sys
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pideai_otel._net import listening_socket

__all__ = [
    "gemini_app",
    "whatsapp_app",
    "payments_app",
    "status_callback_payload",
    "tiny_png",
    "RunningServer",
    "start",
    "run",
    "main",
]

Outcome = dict[str, Any]


class _Script:
    """Scripted outcomes for the next calls, then the default; plus a record of each call."""

    def __init__(self, default: str, known: frozenset[str]) -> None:
        self._default = default
        self._known = known
        self._queue: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []

    def load(self, items: Any) -> int:
        if not isinstance(items, list):
            raise ValueError("the script must be a JSON list of outcomes")
        parsed: list[Outcome] = []
        for item in items:
            outcome = {"outcome": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
            if outcome is None or outcome.get("outcome") not in self._known:
                raise ValueError(f"unknown outcome {item!r}; known: {sorted(self._known)}")
            parsed.append(outcome)
        with self._lock:
            self._queue = deque(parsed)
        return len(parsed)

    def next(self) -> Outcome:
        with self._lock:
            return self._queue.popleft() if self._queue else {"outcome": self._default}

    def record(self, call: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(call)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.calls.clear()


def _control_routes(script: _Script, extra_reset: Callable[[], None] | None = None) -> list[Route]:
    async def load_script(request: Request) -> Response:
        try:
            count = script.load(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": count})

    async def reset(request: Request) -> Response:
        script.reset()
        if extra_reset is not None:
            extra_reset()
        return JSONResponse({})

    async def calls(request: Request) -> Response:
        return JSONResponse(script.calls)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_control/script", load_script, methods=["POST"]),
        Route("/_control/reset", reset, methods=["POST"]),
        Route("/_control/calls", calls, methods=["GET"]),
        Route("/_control/health", health, methods=["GET"]),
    ]


async def _hold(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client hangs up (True): a 'timeout' must not outlive its client."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(0.05)
    return False


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def tiny_png(width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (232, 116, 38)) -> bytes:
    """A valid PNG of one flat colour (what the Gemini stand-in 'generates')."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# --- Gemini -------------------------------------------------------------------------------------

_GEMINI_OUTCOMES = frozenset(
    {"ok", "safety_block", "prompt_blocked", "no_image", "400", "429", "500", "503", "timeout"}
)
_GOOGLE_ERRORS = {
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "500": (500, "INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}
# Gemini counts an input image as 258 tokens and bills a generated image as 1290 output tokens.
_INPUT_IMAGE_TOKENS = 258
_OUTPUT_IMAGE_TOKENS = 1290


def _google_error(code: int, status: str, message: str, reason: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        ]
    return JSONResponse({"error": error}, status_code=code)


def gemini_app(*, api_key: str | None = None) -> Starlette:
    """`POST /v1beta/models/{model}:generateContent`, answering with a PNG part and usageMetadata."""
    script = _Script("ok", _GEMINI_OUTCOMES)

    async def generate(request: Request) -> Response:
        model = request.path_params["model"]
        header_key = request.headers.get("x-goog-api-key")
        query_key = request.query_params.get("key")
        given = header_key or query_key
        body = await _json_body(request)
        outcome = script.next()
        name = outcome["outcome"]
        parts = _request_parts(body)
        prompt_chars = sum(len(p.get("text", "")) for p in parts)
        images_in = sum(1 for p in parts if "inlineData" in p or "inline_data" in p)
        script.record(
            {
                "model": model,
                "auth": "header" if header_key else "query" if query_key else None,
                "outcome": name,
                "prompt_chars": prompt_chars,
                "images_in": images_in,
            }
        )
        if api_key is not None and given is None:
            return _google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
        if api_key is not None and not hmac.compare_digest(given or "", api_key):
            return _google_error(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID"
            )
        if body is None:
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")

        if name == "timeout":
            if await _hold(request, float(outcome.get("seconds", 30.0))):
                return Response(status_code=499)
            name = "ok"
        if name in _GOOGLE_ERRORS:
            return _google_error(*_GOOGLE_ERRORS[name])

        prompt_tokens = int(outcome.get("prompt_tokens", max(1, prompt_chars // 4) + _INPUT_IMAGE_TOKENS * images_in))
        answer: dict[str, Any] = {"modelVersion": model, "responseId": secrets.token_urlsafe(12)}
        if name == "prompt_blocked":
            answer["promptFeedback"] = {"blockReason": outcome.get("reason", "SAFETY")}
            answer["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
            return JSONResponse(answer)
        if name == "safety_block":
            answer["candidates"] = [
                {"content": {"role": "model"}, "finishReason": outcome.get("reason", "SAFETY"), "index": 0}
            ]
            answer["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
            return JSONResponse(answer)
        text_parts: list[dict[str, Any]]
        if name == "no_image":
            text_parts = [{"text": "I can only describe this dish."}]
            output_tokens = int(outcome.get("output_tokens", 8))
        else:
            png = tiny_png(int(outcome.get("width", 64)), int(outcome.get("height", 64)))
            text_parts = [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode("ascii")}}]
            output_tokens = int(outcome.get("output_tokens", _OUTPUT_IMAGE_TOKENS))
        answer["candidates"] = [{"content": {"role": "model", "parts": text_parts}, "finishReason": "STOP", "index": 0}]
        answer["usageMetadata"] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        }
        return JSONResponse(answer)

    routes = [Route("/v1beta/models/{model}:generateContent", generate, methods=["POST"])]
    return Starlette(routes=routes + _control_routes(script))


def _request_parts(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    parts: list[dict[str, Any]] = []
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            parts.extend(p for p in content.get("parts") or [] if isinstance(p, dict))
    return parts


# --- WhatsApp Cloud API ---------------------------------------------------------------------------

_WHATSAPP_OUTCOMES = frozenset({"ok", "invalid_recipient", "rate_limited", "server_error", "auth_error", "timeout"})
_GRAPH_ERRORS = {
    "invalid_recipient": (400, 131030, None, "Recipient phone number not in allowed list"),
    "rate_limited": (400, 130429, None, "Rate limit hit"),
    "server_error": (500, 131000, None, "Something went wrong"),
    "auth_error": (401, 190, 463, "Error validating access token: Session has expired"),
}
_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
_MAX_SENT = 10_000


def _graph_error(
    status: int, code: int, subcode: int | None, message: str, kind: str = "OAuthException"
) -> JSONResponse:
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}",
        "type": kind,
        "code": code,
        "fbtrace_id": secrets.token_urlsafe(9),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return JSONResponse({"error": error}, status_code=status)


def status_callback_payload(
    message_id: str,
    status: str,
    recipient_id: str,
    *,
    phone_number_id: str = "100000000000001",
    errors: Sequence[dict[str, Any]] | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A Cloud API webhook body carrying one message status (what Meta POSTs to the app)."""
    entry: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "recipient_id": recipient_id,
    }
    if status in ("sent", "delivered", "read"):
        entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility"}
    if status == "failed":
        entry["errors"] = list(errors or [{"code": 131026, "title": "Message undeliverable"}])
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "statuses": [entry],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA_ID", "changes": [{"value": value, "field": "messages"}]}],
    }


def whatsapp_app(
    *, access_token: str | None = None, webhook_url: str | None = None, app_secret: str | None = None
) -> Starlette:
    """`POST /{version}/{phone_number_id}/messages`; status callbacks to a webhook on command.

    A scripted "ok" may carry "statuses": ["sent", "delivered"] to have those callbacks POSTed,
    in order, right after the send is answered.
    """
    script = _Script("ok", _WHATSAPP_OUTCOMES)
    webhook: dict[str, str | None] = {"url": webhook_url, "app_secret": app_secret}
    sent: OrderedDict[str, dict[str, str]] = OrderedDict()  # the last _MAX_SENT messages
    tasks: set[asyncio.Task[None]] = set()
    http: dict[str, httpx.AsyncClient] = {}

    async def post_status(message_id: str, status: str, errors: Any = None) -> int:
        url = webhook["url"]
        if not url:
            raise ValueError("no webhook URL configured (POST /_control/webhook)")
        message = sent.get(message_id, {})
        payload = status_callback_payload(
            message_id,
            status,
            message.get("wa_id", "0"),
            phone_number_id=message.get("phone_number_id", "100000000000001"),
            errors=errors,
        )
        raw = json.dumps(payload).encode()
        headers = {"content-type": "application/json"}
        secret = webhook["app_secret"]
        if secret:
            digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            headers["x-hub-signature-256"] = f"sha256={digest}"
        if "client" not in http:  # one client per app: building one (TLS context) costs ~50 ms
            http["client"] = httpx.AsyncClient(timeout=10.0)
        response = await http["client"].post(url, content=raw, headers=headers)
        return response.status_code

    async def send(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        body = await _json_body(request)
        outcome = script.next()
        name = outcome["outcome"]
        script.record({"phone_number_id": request.path_params["phone_number_id"], "outcome": name})
        if access_token is not None and not hmac.compare_digest(auth, f"Bearer {access_token}"):
            return _graph_error(401, 190, None, "Invalid OAuth access token - Cannot parse access token")
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp" or not body.get("to"):
            return _graph_error(400, 100, None, "Invalid parameter")
        if name == "timeout":
            if await _hold(request, float(outcome.get("seconds", 30.0))):
                return Response(status_code=499)
            name = "ok"
        if name in _GRAPH_ERRORS:
            return _graph_error(*_GRAPH_ERRORS[name])
        to = str(body["to"])
        wa_id = "".join(ch for ch in to if ch.isdigit())
        message_id = "wamid." + base64.b64encode(secrets.token_bytes(24)).decode("ascii").rstrip("=")
        sent[message_id] = {"wa_id": wa_id, "phone_number_id": request.path_params["phone_number_id"]}
        while len(sent) > _MAX_SENT:
            sent.popitem(last=False)
        statuses = outcome.get("statuses") or []
        if statuses:
            task = asyncio.get_running_loop().create_task(_post_sequence(message_id, list(statuses)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": wa_id}],
                "messages": [{"id": message_id}],
            }
        )

    async def _post_sequence(message_id: str, statuses: list[str]) -> None:
        for status in statuses:
            await asyncio.sleep(0.02)
            try:
                await post_status(message_id, status)
            except (httpx.HTTPError, ValueError) as exc:
                print(f"whatsapp stand-in: status callback failed: {exc}", file=sys.stderr)

    async def configure_webhook(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not body.get("url"):
            return JSONResponse({"error": 'expected {"url": ..., "app_secret"?: ...}'}, status_code=400)
        webhook["url"] = str(body["url"])
        webhook["app_secret"] = body.get("app_secret")
        return JSONResponse({})

    async def push_status(request: Request) -> Response:
        body = await _json_body(request)
        updates = body.get("updates") if isinstance(body, dict) and "updates" in body else [body]
        results = []
        for update in updates if isinstance(updates, list) else []:
            if not isinstance(update, dict) or update.get("status") not in _STATUSES or not update.get("message_id"):
                return JSONResponse(
                    {"error": f"bad update {update!r}; status one of {sorted(_STATUSES)}"}, status_code=400
                )
            try:
                code = await post_status(str(update["message_id"]), update["status"], update.get("errors"))
            except (httpx.HTTPError, ValueError) as exc:
                return JSONResponse({"error": f"webhook POST failed: {exc}"}, status_code=502)
            results.append(code)
        return JSONResponse({"webhook_status": results})

    async def messages(request: Request) -> Response:
        return JSONResponse([{"id": mid, **info} for mid, info in sent.items()])

    routes = [
        Route("/{version}/{phone_number_id}/messages", send, methods=["POST"]),
        Route("/_control/webhook", configure_webhook, methods=["POST"]),
        Route("/_control/status", push_status, methods=["POST"]),
        Route("/_control/messages", messages, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for task in list(tasks):
            task.cancel()
        if "client" in http:
            await http.pop("client").aclose()

    return Starlette(routes=_control_routes(script, sent.clear) + routes, lifespan=lifespan)


# --- Payment gateway ------------------------------------------------------------------------------

_PAYMENT_OUTCOMES = frozenset({"approve", "decline", "error", "timeout"})


def payments_app(*, api_key: str | None = None) -> Starlette:
    """`POST /v1/charges` {amount (minor units), currency, source, reference} -> approved / declined."""
    script = _Script("approve", _PAYMENT_OUTCOMES)

    async def charge(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        body = await _json_body(request)
        outcome = script.next()
        name = outcome["outcome"]
        script.record({"outcome": name, "currency": body.get("currency") if isinstance(body, dict) else None})
        if api_key is not None and not hmac.compare_digest(auth, f"Bearer {api_key}"):
            return JSONResponse(
                {"error": {"type": "authentication_error", "message": "Invalid API key"}}, status_code=401
            )
        if not isinstance(body, dict) or not isinstance(body.get("amount"), int) or not body.get("currency"):
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": "amount and currency required"}}, status_code=400
            )
        if name == "timeout":
            if await _hold(request, float(outcome.get("seconds", 30.0))):
                return Response(status_code=499)
            name = "approve"
        if name == "error":
            return JSONResponse(
                {"error": {"type": "api_error", "message": "The gateway is unavailable"}},
                status_code=int(outcome.get("status", 502)),
            )
        charge_id = "ch_" + secrets.token_hex(8)
        common = {"id": charge_id, "amount": body["amount"], "currency": str(body["currency"]).upper()}
        if name == "decline":
            decline = outcome.get("decline_code", "insufficient_funds")
            return JSONResponse({**common, "status": "declined", "decline_code": decline}, status_code=402)
        return JSONResponse({**common, "status": "approved"})

    routes = [Route("/v1/charges", charge, methods=["POST"])]
    return Starlette(routes=routes + _control_routes(script))


# --- Serving --------------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[..., Starlette]] = {
    "gemini": gemini_app,
    "whatsapp": whatsapp_app,
    "payments": payments_app,
}


def _config(app: Starlette) -> uvicorn.Config:
    # No log_config: uvicorn must not reconfigure the host process's logging.
    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        http="h11",
        loop="asyncio",
        timeout_graceful_shutdown=2,
    )


class RunningServer:
    """A stand-in served by uvicorn on a background thread; `url` is where it listens."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = listening_socket(host, port)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.app = app
        self._server = uvicorn.Server(_config(app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._control_client: httpx.Client | None = None

    def start(self, timeout: float = 10.0) -> RunningServer:
        if self._thread.ident is not None:  # already started (`with start(...)` is fine)
            return self
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise RuntimeError(f"stand-in on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._control_client is not None:
            self._control_client.close()
            self._control_client = None
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def control(self, path: str, payload: Any = None) -> Any:
        """POST (with payload) or GET (without) a /_control/ endpoint; returns the JSON answer."""
        url = f"{self.url}/_control/{path}"
        if self._control_client is None:
            self._control_client = httpx.Client(timeout=10.0)
        client = self._control_client
        response = client.get(url) if payload is None else client.post(url, json=payload)
        response.raise_for_status()
        return response.json()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(kind: str, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningServer:
    """Start stand-in `kind` (gemini, whatsapp, payments) on a thread; port 0 picks a free port."""
    return RunningServer(_FACTORIES[kind](**options), host, port).start()


def run(kind: str, *, host: str = "127.0.0.1", port: int, **options: Any) -> None:
    """Serve stand-in `kind` in the foreground until interrupted (SIGINT/SIGTERM)."""
    app = _FACTORIES[kind](**options)
    sock = listening_socket(host, port)
    print(f"{kind} stand-in ready on http://{host}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(_config(app)).run(sockets=[sock])
    finally:
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pideai_otel.demo.thirdparty", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(_FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", help="gemini/payments: the key callers must present")
    parser.add_argument("--access-token", help="whatsapp: the bearer token callers must present")
    parser.add_argument("--webhook-url", help="whatsapp: where status callbacks are POSTed")
    parser.add_argument("--app-secret", help="whatsapp: signs callbacks (X-Hub-Signature-256)")
    args = parser.parse_args(argv)
    options: dict[str, Any]
    if args.kind == "whatsapp":
        options = {"access_token": args.access_token, "webhook_url": args.webhook_url, "app_secret": args.app_secret}
    else:
        options = {"api_key": args.api_key}
    try:
        run(args.kind, host=args.host, port=args.port, **options)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"{args.kind} stand-in: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
