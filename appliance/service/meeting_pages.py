"""The web page's meetings: the list, one meeting (its lines to hear where the audio is kept, its
email per recipient), downloads, resend and delete. Every route is behind Pages' session guard."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from appliance.delivery.outbox_records import FAILED, REFUSED, RETRYING
from appliance.errors import UsageError
from appliance.service import spool_audio
from appliance.store import UNFINISHED
from appliance.transcript import FORMATS, Transcript, render

_TYPES = {
    "txt": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "json": "application/json",
}
_SHOW_REPLY = (RETRYING, FAILED, REFUSED)  # a delivered one's reply is only the server's "OK"


def clock(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def date(started_at: float) -> str:
    """A meeting's start as the box's local date and time."""
    return datetime.datetime.fromtimestamp(started_at).strftime("%Y-%m-%d %H:%M")


def transcript_lines(transcript: Transcript) -> list[dict[str, str]]:
    """The transcript's spoken segments, as the pages show them."""
    return [
        {
            "at": clock(s.start_s),
            "start": f"{s.start_s:.2f}",
            "speaker": s.speaker or "",
            "text": " ".join(s.text.split()),
        }
        for s in transcript.segments
        if s.text.strip()
    ]


def _to(path: str, message: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?{urlencode({'message': message})}")


class MeetingPages:
    """The /meetings routes, for Pages."""

    def __init__(self, pages: Any) -> None:
        self.pages = pages
        self.meetings = pages.daemon.meetings
        self.db = pages.daemon.db

    def routes(self, guarded: Any) -> list[web.RouteDef]:
        """The routes, each wrapped by guarded (a session, and a CSRF token on every POST)."""
        one = r"/meetings/{id:\d+}"
        return [
            web.get("/meetings", guarded(self.index)),
            web.get(one, guarded(self.meeting)),
            web.get(one + "/transcript.{fmt}", guarded(self.download)),
            web.get(one + "/audio", guarded(self.audio)),
            web.post(one + "/resend", guarded(self.resend)),
            web.get(one + "/delete", guarded(self.confirm_delete)),
            web.post(one + "/delete", guarded(self.delete)),
        ]

    def _delivery(self, meeting_id: int) -> list[dict[str, Any]]:
        return [
            {
                "address": r.address,
                "state": r.state,
                "attempts": r.attempts,
                "reply": r.reply if r.state in _SHOW_REPLY else "",
            }
            for r in self.meetings.outbox.recipients(meeting_id)
        ]

    async def index(self, request: web.Request) -> web.Response:
        """Every meeting, newest first, with its delivery per recipient."""
        rows = [
            {
                "id": m.id,
                "title": m.title,
                "date": date(m.started_at),
                "duration": clock(m.audio_s),
                "state": m.state,
                "delivery": self._delivery(m.id),
            }
            for m in reversed(self.db.meetings())
        ]
        return self.pages.page(
            "meetings",
            request,
            heading="Meetings",
            meetings=rows,
            message=request.query.get("message", "")[:200],
        )

    def _meeting(self, request: web.Request) -> Any:
        meeting = self.db.meeting(int(request.match_info["id"]))
        if meeting is None:
            raise web.HTTPNotFound(text="no such meeting")
        return meeting

    async def meeting(self, request: web.Request) -> web.Response:
        """One meeting's transcript (each line plays from its start where the audio is kept),
        its downloads, its email per recipient, Resend and Delete."""
        meeting = self._meeting(request)
        finished = meeting.state not in UNFINISHED
        return self.pages.page(
            "meeting",
            request,
            heading=meeting.title or "(no title)",
            meeting=meeting,
            finished=finished,
            audio=finished and self.meetings.spool_path(meeting.id).exists(),
            mailed=self.meetings.outbox.message(meeting.id) is not None,
            date=date(meeting.started_at),
            duration=clock(meeting.audio_s),
            formats=FORMATS,
            lines=transcript_lines(self.db.transcript(meeting.id)),
            delivery=self._delivery(meeting.id),
            message=request.query.get("message", "")[:200],
        )

    async def download(self, request: web.Request) -> web.Response:
        """The transcript as txt, srt, vtt or json, as a download."""
        fmt = request.match_info["fmt"]
        if fmt not in FORMATS:
            raise web.HTTPNotFound(text=f"no format {fmt!r}")
        meeting = self._meeting(request)
        text = render(self.db.transcript(meeting.id), fmt)
        return web.Response(
            text=text,
            content_type=_TYPES[fmt],
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="meeting-{meeting.id}.{fmt}"',
                "Cache-Control": "no-store",
            },
        )

    async def audio(self, request: web.Request) -> web.StreamResponse:
        """A finished meeting's audio as WAV, with Range; 404 once retention has deleted it."""
        meeting = self._meeting(request)
        if meeting.state in UNFINISHED:
            raise web.HTTPNotFound(text="the audio can be heard once the meeting is finished")
        return await spool_audio.serve(request, self.meetings.spool_path(meeting.id))

    async def resend(self, request: web.Request) -> web.StreamResponse:
        """Email the transcript again (`appliance resend`); the meeting page shows how it goes."""
        meeting = self._meeting(request)
        page = f"/meetings/{meeting.id}"
        try:
            await self.meetings.resend(meeting.id)
        except UsageError as err:
            raise _to(page, str(err)) from err
        raise _to(page, "The email is being sent again; its delivery shows below.")

    async def confirm_delete(self, request: web.Request) -> web.Response:
        """The confirmation step before a delete (a page of its own: no JavaScript needed)."""
        meeting = self._meeting(request)
        return self.pages.page(
            "delete",
            request,
            heading="Delete this meeting?",
            meeting=meeting,
            date=date(meeting.started_at),
        )

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """Delete the meeting (`appliance delete`) once confirmed; refused while it is not done."""
        meeting = self._meeting(request)
        form = await request.post()
        if form.get("confirm") != "yes":
            raise web.HTTPSeeOther(f"/meetings/{meeting.id}/delete")
        try:
            await self.meetings.delete(meeting.id)
        except UsageError as err:
            raise _to(f"/meetings/{meeting.id}", str(err)) from err
        raise _to("/meetings", f"Meeting {meeting.id} was deleted.")
