"""`memory-r1 serve`'s app (app/server/http_server.py) on a real uvicorn server on a free loopback
port, driven by the real `openai` client (streaming and not) and raw HTTP for the bad requests;
the models are scripted FakeBackends over a real bank."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from core.fakes import FakeBackend, router
from core.llm.modelset import ModelSet

openai = pytest.importorskip("openai")

KEY = "test-key-123"
REPLY = "**Memories selected as relevant:**\n- none\n**Answer:** Tom is your cat."


@pytest.fixture
def backends():
    answer = FakeBackend(default=router(REPLY), chunk=3)
    manager = FakeBackend(default=router(facts=lambda text: ["User has a dog named Rex."] if "dog" in text else []))
    return answer, manager


@pytest.fixture
def server(bank, backends):
    from app.server.http_server import LocalServer

    srv = LocalServer(bank, models=ModelSet.of(answer=backends[0], manager=backends[1]), api_key=KEY)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=30)


def _raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def _state(bank):
    return ([(m.id, m.text, m.status) for m in bank.list(status=None)], len(bank.history(limit=10_000)))


def test_binds_to_loopback_by_default(server):
    assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/v1"


def test_models_and_non_streaming_completion(server, client, bank, backends):
    bank.add("User has a cat named Tom.", speaker="User")
    assert [m.id for m in client.models.list().data] == ["memory-r1"]
    out = client.chat.completions.create(model="memory-r1",
                                         messages=[{"role": "user", "content": "What is my cat called?"}])
    assert out.choices[0].message.content == "Tom is your cat."
    assert out.choices[0].finish_reason == "stop"
    # the memory went into the answer prompt
    prompt = json.dumps(backends[0].calls[-1]["messages"])
    assert "User has a cat named Tom." in prompt


def test_streaming_completion_and_manager_in_background(server, client, bank):
    stream = client.chat.completions.create(model="memory-r1", stream=True, user="ann",
                                            messages=[{"role": "user", "content": "I have a dog named Rex."}])
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1  # really streamed, in pieces
    assert "".join(pieces) == "Tom is your cat."
    assistant = server.app.state.sessions.assistant()
    assert assistant.wait_idle(20)
    added = [m for m in bank.list() if m.text == "User has a dog named Rex."]
    assert added
    # the manager's change is in the event log, caused by the API conversation's message
    event = bank.history(added[0].id)[0]
    assert event.event == "ADD" and event.turn.startswith("chat:")
    # the `user` field keeps one conversation
    client.chat.completions.create(model="memory-r1", user="ann", messages=[{"role": "user", "content": "Hi"}])
    convs = [c for c in bank.chats.list_conversations() if c.title == "API: ann"]
    assert len(convs) == 1 and len(bank.chats.messages(convs[0].id)) == 4


def test_raw_sse_lines_end_with_done(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": "memory-r1", "stream": True, "messages": [{"role": "user", "content": "hello"}]}),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    lines = [ln for ln in resp.read().decode().split("\n") if ln]
    conn.close()
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_memories_routes(server, bank):
    status, body = _raw(server, "POST", "/v1/memories", json.dumps({"text": "Ann likes tea."}).encode())
    assert status == 201 and body["text"] == "Ann likes tea."
    mid = body["id"]
    assert bank.history(mid)[0].actor == "tool"
    status, body = _raw(server, "GET", "/v1/memories")
    assert status == 200 and [m["id"] for m in body["data"]] == [mid]
    status, body = _raw(server, "GET", "/v1/memories?q=tea")
    assert status == 200 and body["data"][0]["id"] == mid and "score" in body["data"][0]
    status, body = _raw(server, "DELETE", f"/v1/memories/{mid}")
    assert status == 200 and body["deleted"] is True
    assert bank.get(mid).status == "deleted"
    bank.undo(batch=body["batch_id"])  # undoable, like any delete
    assert bank.get(mid).status == "active"


@pytest.mark.parametrize("case", ["bad_json", "bad_fields", "unknown_model", "no_key", "wrong_key",
                                  "unknown_memory", "bad_memory_id", "unknown_route", "not_user_last",
                                  "form_post", "foreign_host"])
def test_bad_requests_get_openai_errors_and_change_nothing(server, bank, case):
    bank.add("Ann likes tea.")
    before = _state(bank)
    chat = {"model": "memory-r1", "messages": [{"role": "user", "content": "hi"}]}
    status_of = {
        "bad_json": (400, "POST", "/v1/chat/completions", b'{"model": "memory-r1", "messages": [', {}),
        "bad_fields": (400, "POST", "/v1/memories", json.dumps({"txt": "x"}).encode(), {}),
        "unknown_model": (404, "POST", "/v1/chat/completions", json.dumps({**chat, "model": "gpt-4o"}).encode(), {}),
        "no_key": (401, "POST", "/v1/memories", json.dumps({"text": "x"}).encode(), {"Authorization": ""}),
        "wrong_key": (401, "GET", "/v1/models", None, {"Authorization": "Bearer nope"}),
        "unknown_memory": (404, "DELETE", "/v1/memories/999", None, {}),
        "bad_memory_id": (400, "DELETE", "/v1/memories/abc", None, {}),
        "unknown_route": (404, "GET", "/v1/nothing", None, {}),
        "not_user_last": (400, "POST", "/v1/chat/completions", json.dumps(
            {**chat, "messages": [{"role": "assistant", "content": "hi"}]}).encode(), {}),
        # what a web page can send without a CORS preflight, and a DNS-rebinding page's Host
        "form_post": (400, "POST", "/v1/memories", json.dumps({"text": "x"}).encode(), {"Content-Type": "text/plain"}),
        "foreign_host": (400, "GET", "/v1/memories", None, {"Host": "evil.example:8765"}),
    }
    want, method, path, body, headers = status_of[case]
    status, data = _raw(server, method, path, body, headers)
    assert status == want, data
    assert set(data["error"]) >= {"message", "type", "code"} and data["error"]["message"]
    assert _state(bank) == before
    assert bank.chats.list_conversations() == []


def test_openai_client_sees_the_errors(server, bank):
    wrong = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        right.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"


def test_oversized_body_is_refused_without_reading_it(server, bank):
    before = _state(bank)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/memories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{\"text\": \"")
        response = b""
        while chunk := sock.recv(65536):  # answered (and closed) though 50 MB were announced, a few bytes sent
            response += chunk
        response = response.decode()
    assert response.startswith("HTTP/1.1 413")
    assert '"request_too_large"' in response
    # a chunked body (no Content-Length) is cut off once it passes the limit
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def chunks():
        yield b'{"text": "'
        for _ in range(40):
            yield b"x" * 65536

    try:
        conn.request("POST", "/v1/memories", body=chunks(), encode_chunked=True,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert conn.getresponse().status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server answered 413 and closed while the client was still sending: refused too
    finally:
        conn.close()
    assert _state(bank) == before


def test_stop_frees_the_port_and_start_again(bank, backends):
    from app.server.http_server import LocalServer

    srv = LocalServer(bank, models=ModelSet.of(answer=backends[0], manager=backends[1]))
    srv.start()
    port = srv.port
    srv.stop()
    assert not srv.running
    again = LocalServer(bank, models=ModelSet.of(answer=backends[0], manager=backends[1]), port=port)
    again.start()
    try:
        assert openai.OpenAI(base_url=again.url, api_key="x", max_retries=0).models.list().data
    finally:
        again.stop()


def test_serve_command_checks_its_arguments(capsys):
    from app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "70000"])
    assert info.value.code == 2
    assert main(["serve", "--api-key", "has space"]) != 0
    assert "API key" in capsys.readouterr().err


def test_serve_command_reports_a_taken_port(capsys):
    from app.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
