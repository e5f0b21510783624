"""The control socket: request parsing (tables and fuzz) and a real unix socket server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import UsageError
from appliance.service.control import (
    COMMANDS,
    MAX_REQUEST_BYTES,
    ControlError,
    ControlServer,
    ProtocolError,
    Request,
    parse_request,
    request,
)


@pytest.mark.parametrize(
    "line, command, args",
    [
        (b'{"command": "status"}\n', "status", {}),
        (
            b'{"command": "start", "title": "Q3", "to": ["a@b.se"], "speed": 1}',
            "start",
            {"title": "Q3", "to": ["a@b.se"], "speed": 1},
        ),
        (b'{"command": "stop", "wait": true}', "stop", {"wait": True}),
        (b'{"command": "show", "id": 4, "format": "srt"}', "show", {"id": 4, "format": "srt"}),
        (b'{"command": "stop", "wait": null}', "stop", {}),
    ],
)
def test_parse_accepts(line, command, args):
    assert parse_request(line) == Request(command, args)


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"not json", "not a JSON line"),
        (b"\xff\xfe", "not a JSON line"),
        (b"[1, 2]", '"command" string'),
        (b'{"cmd": "status"}', '"command" string'),
        (b'{"command": "reboot"}', "unknown command 'reboot'"),
        (b'{"command": "start", "title": 5}', "title must be str"),
        (b'{"command": "start", "to": ["a@b.se", 3]}', "list of strings"),
        (b'{"command": "show", "id": true}', "id must be int"),
        (b'{"command": "start", "speed": "fast"}', "speed must be float"),
        (b'{"command": "start", "speed": false}', "speed must be float"),
        (b'{"command": "stop", "wait": 1}', "wait must be bool"),
        (b'{"command": "show", "id": 1, "x": 1}', "unknown argument 'x'"),
        (b'{"command": "show", "id": 99999999999999999999999}', "id is out of range"),
        (b'{"command": "start", "title": "a\\u0000b"}', "NUL"),
        (b"[" * 100000, "longer than"),
    ],
)
def test_parse_refuses_with_one_line(line, reason):
    with pytest.raises(ProtocolError) as caught:
        parse_request(line)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["command", "title", "to", "id", "wait", "format", "zz"]),
            _json,
            max_size=4,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_parse_fuzz_never_crashes(line):
    """Whatever arrives, the answer is a Request or one clear ProtocolError line."""
    try:
        parsed = parse_request(line)
    except ProtocolError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert parsed.command in COMMANDS


def _serve(path, handler):
    """Run a ControlServer on its own loop in a thread; returns the path and a closer."""
    loop = asyncio.new_event_loop()
    server = ControlServer(path, handler)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def close():
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    return path, close


async def _echo(req: Request) -> dict:
    if req.command == "stop":
        raise UsageError("no meeting is recording")
    if req.command == "cancel":
        raise RuntimeError("boom")
    return {"command": req.command, "args": req.args}


def test_server_answers_and_reports_errors(tmp_path):
    path, close = _serve(tmp_path / "run" / "control.sock", _echo)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        reply = request(path, "show", id=3, format="txt")
        assert reply == {"ok": True, "command": "show", "args": {"id": 3, "format": "txt"}}
        with pytest.raises(UsageError, match="no meeting is recording"):
            request(path, "stop")
        with pytest.raises(ControlError, match="internal error: RuntimeError: boom"):
            request(path, "cancel")  # a handler bug is answered, and the server goes on
        with pytest.raises(UsageError, match="unknown command"):
            request(path, "reboot")
        assert request(path, "status")["ok"]
    finally:
        close()
    assert not path.exists()


def test_server_survives_garbage_and_oversized_requests(tmp_path):
    path, close = _serve(tmp_path / "run" / "control.sock", _echo)
    try:
        for payload in (b"\x00\x01garbage\n", b"x" * (MAX_REQUEST_BYTES + 10) + b"\n", b""):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(15)
                conn.connect(str(path))
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                answer = json.loads(conn.makefile("rb").readline())
                assert answer["ok"] is False and answer["error"]
        assert request(path, "status")["ok"]
    finally:
        close()


def test_close_ends_a_connection_that_has_sent_nothing(tmp_path):
    path, close = _serve(tmp_path / "run" / "control.sock", _echo)
    with socket.socket(socket.AF_UNIX) as idle:
        idle.settimeout(3)  # the server itself would wait 10 s for a request line
        idle.connect(str(path))
        request(path, "status")  # the idle connection is accepted by now
        close()
        assert idle.recv(64) == b""


def test_stale_socket_replaced_live_one_refused(tmp_path):
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a killed daemon leaves its socket file behind
    path, close = _serve(path, _echo)
    try:
        assert request(path, "status")["ok"]
        second = ControlServer(path, _echo)
        with pytest.raises(ControlError, match="already listening"):
            asyncio.run(second.start())
    finally:
        close()


def test_client_says_daemon_not_running(tmp_path):
    with pytest.raises(ControlError, match="not running"):
        request(tmp_path / "none.sock", "status")
