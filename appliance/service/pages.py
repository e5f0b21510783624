"""The web page on the box (issue 20): log in, see the meeting now, start and stop it; the
meetings (meeting_pages.py) and the upload (uploads.py) behind the same session guard.
Server-rendered jinja2 on the API's server; no transcript without a session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from appliance import paths
from appliance.errors import UsageError
from appliance.service.login import Password, Session, Sessions, csrf_ok
from appliance.service.meeting_pages import MeetingPages, clock, transcript_lines
from appliance.service.parsing import parse_bearer
from appliance.service.tokens import Tokens
from appliance.service.uploads import Uploads

_LOGGER = logging.getLogger(__name__)

COOKIE = "session"
LOGIN_COOKIE = "login_csrf"
SESSION = web.RequestKey("session", Session)
_EVENTS_S = 1.0  # how often the now page's event stream looks for new lines


class Pages:
    """The page routes, added to the API's application."""

    def __init__(self, app: web.Application, daemon: Any, tokens: Tokens, tls: bool) -> None:
        self.daemon = daemon
        self.tokens = tokens
        self.tls = tls
        self.password = Password(daemon.db)
        self.sessions = Sessions()
        folder = paths.builtin_templates() / "web"
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
        )
        guarded = self._guard
        config = daemon.config
        uploads = Uploads(self, config.state_dir / "uploads", config.web.max_upload_mb * 1_000_000)
        app.add_routes(
            [
                web.get("/login", self.login_form),
                web.post("/login", self.login),
                web.post("/logout", guarded(self.logout)),
                web.get("/", guarded(self.now)),
                web.get("/now/events", guarded(self.events)),
                web.post("/start", guarded(self.start)),
                web.post("/stop", guarded(self.stop)),
                web.post("/cancel", guarded(self.cancel)),
                *MeetingPages(self).routes(guarded),
                web.get("/upload", guarded(uploads.form)),
                web.post("/upload", guarded(uploads.post)),
                web.static("/static", folder / "static"),
            ]
        )

    # --- sessions -------------------------------------------------------------------------

    def _guard(self, handler: Callable[[web.Request], Awaitable]) -> Callable:
        """A page for the logged in (or an API token): others are sent to /login (303), and a
        form without the session's CSRF token is refused (403)."""

        async def guarded(request: web.Request) -> Any:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                token = parse_bearer(request.headers.get("Authorization"))
                if not (token and self.tokens.owner(token)):
                    raise web.HTTPSeeOther("/login")
                # A script's token: a browser never adds it by itself, so there is no form to
                # forge and no CSRF token to check.
                request[SESSION] = Session("", "", 0.0)
                return await handler(request)
            request[SESSION] = session
            # A multipart form (an upload) is streamed to disk; its handler checks the token.
            if request.method == "POST" and request.content_type != "multipart/form-data":
                form = await request.post()
                if not csrf_ok(session.csrf, form.get("csrf_token")):
                    raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong")
            return await handler(request)

        return guarded

    def _page(self, name: str, code: int = 200, **values: Any) -> web.Response:
        text = self.templates.get_template(f"{name}.html.j2").render(**values)
        response = web.Response(text=text, status=code, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def page(self, name: str, request: web.Request, **values: Any) -> web.Response:
        """A page for the logged-in session of request."""
        return self._page(name, session=request[SESSION], **values)

    def form_ok(self, request: web.Request, token: Any) -> bool:
        """Whether a form's csrf_token is the session's (a script's token needs none)."""
        session = request[SESSION]
        return not session.id or csrf_ok(session.csrf, token)

    def _cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="Strict", secure=self.tls, path="/"
        )

    async def login_form(self, request: web.Request, message: str = "", code: int = 200):
        """The login form, with a fresh CSRF token in a cookie and a hidden field."""
        csrf = secrets.token_urlsafe(32)
        response = self._page(
            "login", code, heading="Log in", session=None, csrf=csrf, message=message
        )
        self._cookie(response, LOGIN_COOKIE, csrf)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the password; a session cookie and the now page, or the form again."""
        client = request.remote or "?"
        if not self.sessions.allowed(client):
            return await self.login_form(request, "Too many wrong passwords; wait a while.", 429)
        form = await request.post()
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not csrf_ok(expected, form.get("csrf_token")):
            raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong")
        password = form.get("password")
        if not isinstance(password, str) or not await asyncio.to_thread(
            self.password.check, password
        ):
            self.sessions.failed(client)
            _LOGGER.warning("web: wrong password from %s", client)
            return await self.login_form(request, "Wrong password.", 401)
        session = self.sessions.start()
        response = web.HTTPSeeOther("/")
        self._cookie(response, COOKIE, session.id)
        response.del_cookie(LOGIN_COOKIE, path="/")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the session."""
        self.sessions.end(request[SESSION])
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- now ------------------------------------------------------------------------------

    async def now(self, request: web.Request) -> web.Response:
        """State, the meeting, its transcript so far, and Start or Stop and Cancel."""
        status = await self.daemon.meetings.status()
        current = self.daemon.meetings.current
        meeting = self.daemon.db.meeting(current.meeting.id) if current else None
        lines = transcript_lines(self.daemon.db.transcript(meeting.id)) if meeting else []
        return self._page(
            "now",
            heading="Now",
            session=request[SESSION],
            status=status,
            meeting=meeting,
            recording=meeting is not None,
            elapsed=clock(status["elapsed_s"]),
            lines=lines,
            message=request.query.get("message", "")[:200],
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each new transcript line of the current meeting and its state,
        until it is final (then `end`) or the browser goes away."""
        given = request.query.get("after", "0")
        after = int(given) if given.isascii() and given.isdigit() else 0
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        current = self.daemon.meetings.current
        meeting_id = current.meeting.id if current else None
        try:
            while meeting_id is not None:
                live = (
                    self.daemon.meetings.current is not None
                    and self.daemon.meetings.current.meeting.id == meeting_id
                )
                # Counted in lines, as the page counts what it shows (empty segments skipped).
                lines = transcript_lines(self.daemon.db.transcript(meeting_id))
                fresh, after = lines[after:], max(after, len(lines))
                for line in fresh:
                    await response.write(_event("line", line))
                status = await self.daemon.meetings.status()
                state = {"state": status["state"], "elapsed": clock(status["elapsed_s"])}
                await response.write(_event("state", state))
                if not live:  # it was final before these lines were read: nothing more comes
                    break
                await asyncio.sleep(_EVENTS_S)
            await response.write(_event("end", {}))
        except ConnectionResetError:
            pass  # the page was closed
        return response

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Start a meeting with the form's title and recipients."""
        form = await request.post()
        title = str(form.get("title", ""))[:200]
        to = tuple(a for a in re.split(r"[\s,;]+", str(form.get("to", ""))) if a)
        try:
            await self.daemon.meetings.start(title, to)
        except UsageError as err:
            raise web.HTTPSeeOther(f"/?{_query(message=str(err))}") from err
        raise web.HTTPSeeOther("/")

    async def stop(self, request: web.Request) -> web.StreamResponse:
        """Stop the meeting; its transcript goes out as with the button."""
        try:
            await self.daemon.meetings.stop_meeting()
        except UsageError as err:
            raise web.HTTPSeeOther(f"/?{_query(message=str(err))}") from err
        raise web.HTTPSeeOther("/")

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """Stop and discard the meeting."""
        try:
            await self.daemon.meetings.cancel_meeting()
        except UsageError as err:
            raise web.HTTPSeeOther(f"/?{_query(message=str(err))}") from err
        raise web.HTTPSeeOther("/")


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _query(**values: str) -> str:
    return urlencode(values)
