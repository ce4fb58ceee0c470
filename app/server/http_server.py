"""`memory-r1 serve`: an OpenAI-compatible HTTP API over the memory (FastAPI + uvicorn).

Routes (all under `/v1`, JSON):
- `GET /v1/models`: the one model, "memory-r1".
- `POST /v1/chat/completions`: the last user message is answered by the app's `Assistant`
  (retrieved memories, the answer model), streamed as SSE `data: {chunk}` lines ending with
  `data: [DONE]` when `"stream": true`, else one `chat.completion`. The Memory Manager then runs
  on that message in the background, as in the app's chat. Conversations: a request with a
  `user` field continues that user's conversation ("API: <user>", kept in the chat history);
  without one each request is a conversation of its own, seeded with the request's earlier
  user/assistant messages (so the reply sees them; only the last message goes to the manager).
  System messages are not used (the app has its own prompt). The reply carries the ids of the
  memories it used in `memory_r1.memories`.
- `GET /v1/memories?q=&limit=&speaker=` (list, or search with `q`), `POST /v1/memories`
  `{"text", "speaker"?}` (a direct add, 201), `DELETE /v1/memories/{id}` (a soft, undoable
  delete). Changes are logged with actor "tool", turn "tool:http".

Errors have OpenAI's shape `{"error": {"message", "type", "code"}}`: malformed JSON or bad
fields 400, a Host that is not this computer (when bound to loopback: DNS rebinding) or a
POST body that is not `application/json` (a cross-site form) 400, a wrong or missing key 401
(with `api_key`), an unknown model, memory or route 404, a body over `max_body` bytes 413
(refused from its Content-Length before reading it, or as soon as a chunked body passes the
limit), a locked database 503. None of them changes the bank.

`create_app(...)` builds the FastAPI app; `LocalServer` runs it with uvicorn in a thread
(`start()`/`stop()`, the GUI's switch and the tests); `serve(...)` runs it in the calling
thread until Ctrl-C (the CLI). Bound to 127.0.0.1 unless a host is given. No access log: URLs
carry search text. One reply at a time (a lock: the Assistant serves one caller thread, and a
llama.cpp instance one thread).
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from core.errors import ConflictError, DatabaseLockedError, InvalidInputError, NotFoundError, UserError
from core.types import CancelToken

from app.server.service import MemoryService, memory_json

log = logging.getLogger(__name__)

MODEL_ID = "memory-r1"
MAX_BODY = 1 << 20  # 1 MiB
DEFAULT_PORT = 8765
SEED_MESSAGES = 10  # earlier messages of a request copied into its conversation


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(error_body(err.message, err.type, err.code), status_code=err.status, headers=headers)


# --------------------------------------------------------------------------- request bodies

class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens...: the app's settings apply
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)
    speaker: str | None = Field(default=None, max_length=200)


async def _json_body(request: Request, model: type[BaseModel]):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":  # a web page cannot send that without a CORS preflight we never grant
        raise ApiError(400, "Send the body as JSON (Content-Type: application/json).", code="invalid_content_type")
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON ({exc.__class__.__name__}).",
                       code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()}))
        raise ApiError(400, f"Invalid or missing fields: {fields}.", code="invalid_request") from None


# --------------------------------------------------------------------------- body limit

class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 without being read (Content-Length), or
    as soon as a chunked body passes the limit (the app never sees the rest)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send)
        seen = 0
        started = refused = False

        async def limited_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the 413 was sent instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(f"The request body is larger than {self.limit} bytes.",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- completions

class ChatSessions:
    """The Assistant (made on the first completion) and the API's conversations."""

    def __init__(self, service: MemoryService, assistant=None) -> None:
        self.service = service
        self._assistant = assistant
        self._own_assistant = assistant is None
        self._lock = threading.Lock()  # one reply at a time
        self._users: dict[str, int] = {}

    def assistant(self):
        if self._assistant is None:
            from core.assistant.pipeline import Assistant

            self._assistant = Assistant(self.service.bank, models=self.service.models,
                                        settings=self.service.app_settings(), user_name=self.service.user_name)
        return self._assistant

    def close(self, drain_timeout: float = 0.0) -> None:
        """Stop the Assistant this made (a later completion makes a new one)."""
        with self._lock:
            if self._own_assistant and self._assistant is not None:
                self._assistant.close(drain_timeout=drain_timeout)
                self._assistant = None

    def _usable(self, cid: int) -> bool:
        try:
            return self.service.bank.chats.get_conversation(cid).deleted_at is None
        except NotFoundError:
            return False

    def conversation(self, req: ChatRequest) -> int:
        chats = self.service.bank.chats
        if req.user:
            title = f"API: {req.user}"
            cid = self._users.get(req.user)
            if cid is not None and not self._usable(cid):  # deleted or purged in the app meanwhile
                cid = None
            if cid is None:
                found = [c for c in chats.list_conversations() if c.title == title]
                cid = found[0].id if found else chats.create_conversation(title).id
                self._users[req.user] = cid
            return cid
        cid = chats.create_conversation("API request").id
        earlier = [m for m in req.messages[:-1] if m.role in ("user", "assistant") and m.text().strip()]
        for m in earlier[-SEED_MESSAGES:]:
            chats.add_message(cid, m.role, m.text())
        return cid

    def reply(self, req: ChatRequest, on_token=None, cancel: CancelToken | None = None):
        last = req.messages[-1]
        if last.role != "user" or not last.text().strip():
            raise ApiError(400, "The last message must be a non-empty user message.", code="invalid_request")
        with self._lock:
            cid = self.conversation(req)
            return self.assistant().reply(cid, last.text(), on_token=on_token, cancel=cancel), cid


def _completion(reply, cid: int, cmpl_id: str, created: int) -> dict:
    return {"id": cmpl_id, "object": "chat.completion", "created": created, "model": MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "memory_r1": {"conversation_id": cid, "memories": [memory_json(m) for m in reply.selected]}}


def _chunk(cmpl_id: str, created: int, delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
    body = {"id": cmpl_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if extra:
        body.update(extra)
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _stream(sessions: ChatSessions, req: ChatRequest, cmpl_id: str, created: int) -> Iterator[str]:
    """SSE lines; the reply runs on its own thread, tokens come through a queue. A client that
    goes away cancels the reply (the message and the partial reply stay in the chat)."""
    pieces: queue.Queue = queue.Queue()
    cancel = CancelToken()
    done = object()

    def work():
        try:
            reply, cid = sessions.reply(req, on_token=pieces.put, cancel=cancel)
            pieces.put((done, reply, cid))
        except BaseException as exc:  # reported in the stream
            pieces.put((done, exc, None))

    threading.Thread(target=work, name="api-reply", daemon=True).start()
    yield _chunk(cmpl_id, created, {"role": "assistant", "content": ""})
    try:
        while True:
            item = pieces.get()
            if isinstance(item, tuple) and item and item[0] is done:
                _, result, cid = item
                if isinstance(result, BaseException):
                    err = _as_api_error(result)
                    yield f"data: {json.dumps(error_body(err.message, err.type, err.code))}\n\n"
                else:
                    extra = {"memory_r1": {"conversation_id": cid,
                                           "memories": [memory_json(m) for m in result.selected]}}
                    yield _chunk(cmpl_id, created, {}, "stop", extra)
                yield "data: [DONE]\n\n"
                return
            if item:
                yield _chunk(cmpl_id, created, {"content": item})
    finally:
        cancel.cancel()  # no-op once finished; stops the reply when the client left


def _as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), code="not_found")
    if isinstance(exc, ConflictError):
        return ApiError(409, str(exc), code="conflict")
    if isinstance(exc, DatabaseLockedError):
        return ApiError(503, str(exc), "server_error", "database_locked")
    if isinstance(exc, UserError):
        return ApiError(400, str(exc), code="invalid_request")
    if isinstance(exc, ClientDisconnect):  # the client left (or BodyLimit cut the body off)
        return ApiError(400, "The client disconnected.", code="client_disconnected")
    log.error("API request failed", exc_info=exc)
    return ApiError(500, "Internal error; see the Memory-R1 log.", "server_error", "internal_error")


# --------------------------------------------------------------------------- the app

def _host_name(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8765" -> "127.0.0.1", "[::1]:80" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def create_app(service: MemoryService, *, api_key: str | None = None, max_body: int = MAX_BODY,
               assistant=None, loopback_only: bool = True) -> FastAPI:
    """The FastAPI app over `service` (and an injected `Assistant`, else one made on the first
    completion from the service's models). `app.state.sessions.close()` stops that Assistant.
    `loopback_only`: requests whose Host is not this computer get 400 (DNS rebinding); POST
    bodies must be `application/json` (a web page cannot send that cross-site without a CORS
    preflight, which this server never grants)."""
    app = FastAPI(title="Memory-R1", docs_url=None, redoc_url=None, openapi_url=None)
    sessions = app.state.sessions = ChatSessions(service, assistant)

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else None
        return _error_response(ApiError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        fields = ", ".join(sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()}))
        return _error_response(ApiError(400, f"Invalid parameters: {fields}.", code="invalid_request"))

    @app.exception_handler(UserError)
    async def _user_error(_request, exc: UserError):
        return _error_response(_as_api_error(exc))

    @app.exception_handler(Exception)
    async def _bug(_request, exc: Exception):
        return _error_response(_as_api_error(exc))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if loopback_only and _host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
            # a web page that rebinds its own name to 127.0.0.1 (DNS rebinding) sends its own Host
            return _error_response(ApiError(400, "This server answers only requests addressed to this computer.",
                                            code="invalid_host"))
        if api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error_response(ApiError(401, "Incorrect API key provided.", code="invalid_api_key"))
        return await call_next(request)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id}")
    def model(model_id: str):
        if model_id != MODEL_ID:
            raise ApiError(404, f"The model '{model_id}' does not exist.", code="model_not_found")
        return _model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await _json_body(request, ChatRequest)
        if req.model != MODEL_ID:
            raise ApiError(404, f"The model '{req.model}' does not exist; use '{MODEL_ID}'.",
                           code="model_not_found")
        cmpl_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            return StreamingResponse(_stream(sessions, req, cmpl_id, created), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        from starlette.concurrency import run_in_threadpool

        reply, cid = await run_in_threadpool(sessions.reply, req)
        return _completion(reply, cid, cmpl_id, created)

    @app.get("/v1/memories")
    def list_memories(q: str | None = None, limit: int = 50, speaker: str | None = None):
        if q is not None and q.strip():
            data = service.search(q, k=min(limit, 100), speaker=speaker)
        else:
            data = service.list(limit, speaker=speaker)
        return {"object": "list", "data": data}

    @app.post("/v1/memories", status_code=201)
    async def add_memory(request: Request):
        body = await _json_body(request, MemoryIn)
        from starlette.concurrency import run_in_threadpool

        changes = await run_in_threadpool(service.add, body.text, body.speaker)
        return {"object": "memory", **changes["added"][0]}

    @app.delete("/v1/memories/{memory_id}")
    def delete_memory(memory_id: int):
        if memory_id < 1:
            raise NotFoundError(f"There is no memory #{memory_id}.")
        changes = service.delete(memory_id)
        return {"id": memory_id, "object": "memory", "deleted": True, "batch_id": changes["batch_id"]}

    return app


def _model_card() -> dict:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "memory-r1"}


# --------------------------------------------------------------------------- running it

def new_api_key() -> str:
    import secrets

    return "mr1-" + secrets.token_urlsafe(24)


class LocalServer:
    """The API on uvicorn in a background thread.

    `LocalServer(bank, models=None, host="127.0.0.1", port=0, api_key=None, assistant=None)`;
    port 0 picks a free one (`.port` after `start()`). `start()` returns once it accepts
    connections (raises OSError when the address is taken, RuntimeError when it did not come
    up); `stop()` shuts it down, lets queued manager turns finish for up to `drain_timeout`
    seconds and closes the models it made. Call both from one thread (the GUI thread)."""

    def __init__(self, bank, *, models=None, settings=None, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, assistant=None, max_body: int = MAX_BODY) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.service = MemoryService(bank, models, settings=settings, client="http")
        loopback = host in LOOPBACK_NAMES or host.startswith("127.")
        self.app = create_app(self.service, api_key=api_key, max_body=max_body, assistant=assistant,
                              loopback_only=loopback)
        self._asgi = BodyLimit(self.app, max_body)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def _config(self):
        import uvicorn

        return uvicorn.Config(self._asgi, log_config=None, access_log=False, lifespan="off",
                              server_header=False, timeout_graceful_shutdown=3)

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self.port = sock.getsockname()[1]
        return sock

    def start(self, timeout: float = 10.0) -> None:
        import uvicorn

        if self.running:
            return
        sock = self.bind()
        self._server = server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the local API server did not start")
            time.sleep(0.01)
        log.info("local API listening on %s", self.url)

    def serve(self, sock: socket.socket | None = None) -> None:
        """Run in the calling thread until Ctrl-C / SIGTERM (uvicorn's signal handling), on
        `sock` (from `bind()`) or a new socket."""
        import uvicorn

        sock = sock or self.bind()
        self._server = uvicorn.Server(self._config())
        try:
            self._server.run(sockets=[sock])
        finally:
            self.close(drain_timeout=60.0)

    def stop(self, drain_timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = self._server = None
        self.close(drain_timeout=drain_timeout)

    def close(self, drain_timeout: float = 0.0) -> None:
        self.app.state.sessions.close(drain_timeout=drain_timeout)
        self.service.close()


def check_key(api_key: str | None) -> str | None:
    """An empty key means none; InvalidInputError for a key with spaces or control characters."""
    if api_key is None or api_key == "":
        return None
    if any(c.isspace() or ord(c) < 32 for c in api_key):
        raise InvalidInputError("The API key may not contain spaces or control characters.")
    return api_key
