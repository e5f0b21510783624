"""The transcript email: subject and text/HTML bodies from jinja2 templates, three attachments."""

from __future__ import annotations

import email.policy
import logging
import os
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from appliance.config import Config
from appliance.delivery.recipients import Recipient
from appliance.delivery.roomtime import room_time, room_zone
from appliance.errors import ApplianceError
from appliance.paths import TEMPLATES_OVERRIDE, builtin_templates
from appliance.store import Meeting
from appliance.transcript import Gap, Segment, Transcript
from appliance.transcript import render as render_transcript

_LOGGER = logging.getLogger(__name__)

SUBJECT, BODY_TEXT, BODY_HTML = "subject.txt.j2", "body.txt.j2", "body.html.j2"
TEMPLATE_NAMES = (SUBJECT, BODY_TEXT, BODY_HTML)
# (file name, transcript.render format, MIME subtype of text/*)
ATTACHMENTS = (
    ("transcript.txt", "txt", "plain"),
    ("transcript.srt", "srt", "plain"),
    ("transcript.vtt", "vtt", "vtt"),
)
# 7bit: non-ASCII bodies go quoted-printable or base64, so no relay needs 8BITMIME.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_MAX_COLUMNS = 78  # RFC 5322's recommended line length, which encoded headers keep to
_HEADERS = (
    "subject",
    "from",
    "to",
    "date",
    "message-id",
    "auto-submitted",
    "mime-version",
    "content-type",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class RenderError(ApplianceError, ValueError):
    """A built-in template failed, or a header would not come out as it went in."""


@dataclass(frozen=True)
class Rendered:
    """One message ready to send, and what was wrong with the override templates."""

    data: bytes  # the whole message, CRLF line endings
    message_id: str
    subject: str
    problems: tuple[str, ...]  # "file:line: what", one per broken override template


def header_text(value: str) -> str:
    """Text safe inside a header: one line, no control characters, no encoded-word lookalike."""
    text = " ".join(_CONTROL.sub(" ", value).split())
    # Python 3.11's email package decodes "=?charset?q?...?=" in a value it is given and writes
    # the decoded text out raw, CR/LF included; a zero-width space keeps the text literal.
    return text.replace("=?", "=\u200b?")


def make_message_id(meeting_id: int, sender: str) -> str:
    """A new Message-ID under the sender's domain; the outbox decides it once per meeting."""
    return make_msgid(idstring=f"meeting-{meeting_id}", domain=sender.rpartition("@")[2])


def context(
    config: Config, meeting: Meeting, transcript: Transcript, recipients: Sequence[Recipient]
) -> dict[str, Any]:
    """The variables every template gets (documented in templates/README.md)."""
    zone = room_zone(config.room.timezone)
    start = room_time(meeting.started_at, zone)
    stopped_at = meeting.stopped_at or meeting.started_at + transcript.duration_s
    end = room_time(stopped_at, zone)
    lines = _lines(transcript)
    return {
        "title": " ".join(meeting.title.split()),
        "room": config.room.name,
        "meeting_id": meeting.id,
        "language": transcript.language,
        "date": f"{start:%A} {start.day} {start:%B %Y}",
        "start_time": f"{start:%H:%M}",
        "end_time": f"{end:%H:%M}",
        "timezone": start.tzname() or "",
        "duration": _duration(stopped_at - meeting.started_at),
        "participants": [{"name": r.name, "address": r.address} for r in recipients],
        "lines": lines,
        "gaps": [line for line in lines if line["gap"]],
        "has_speech": any(not line["gap"] for line in lines),
        "attachments": [name for name, _, _ in ATTACHMENTS],
    }


def _clock(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _duration(seconds: float) -> str:
    minutes = round(max(0.0, seconds) / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _lines(transcript: Transcript) -> list[dict[str, Any]]:
    """Speech and gaps in time order, a gap before speech starting with it; one speaker's
    consecutive segments joined into one line (a paragraph) once speakers are labelled."""
    items: list[tuple[float, int, Segment | Gap]] = [(g.start_s, 0, g) for g in transcript.gaps] + [
        (s.start_s, 1, s) for s in transcript.segments if s.text.split()
    ]
    lines = []
    for start_s, is_speech, item in sorted(items, key=lambda i: (i[0], i[1])):
        text = " ".join((item.text if is_speech else item.reason).split())
        speaker = item.speaker if is_speech else None
        if speaker and lines and lines[-1]["speaker"] == speaker:
            lines[-1].update(end=_clock(item.end_s), text=f"{lines[-1]['text']} {text}")
            continue
        lines.append(
            {
                "at": _clock(start_s),
                "end": _clock(item.end_s),
                "text": text,
                "gap": not is_speech,
                "speaker": speaker,
            }
        )
    return lines


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _problem(path: Path, err: BaseException) -> str:
    """One line naming the file and line of a template failure."""
    if isinstance(err, jinja2.TemplateSyntaxError) and err.lineno:
        return f"{path}:{err.lineno}: {err.message}"
    if isinstance(err, UnicodeDecodeError):
        line = err.object[: err.start].count(b"\n") + 1
        return f"{path}:{line}: not UTF-8 text"
    if isinstance(err, OSError):
        return f"{path}: cannot be read: {err.strerror or err}"
    # jinja2 rewrites tracebacks so a template's frames carry its file name and line.
    lines = [
        n
        for frame, n in traceback.walk_tb(err.__traceback__)
        if os.path.normpath(frame.f_code.co_filename) == os.path.normpath(path)
    ]
    where = f"{path}:{lines[-1]}" if lines else str(path)
    message = err.message if isinstance(err, jinja2.TemplateError) and err.message else str(err)
    return f"{where}: {message or type(err).__name__}"


class Renderer:
    """Renders one meeting's email, preferring override templates that work."""

    def __init__(
        self,
        config: Config,
        override_dir: Path = TEMPLATES_OVERRIDE,
        builtin_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.override_dir = Path(override_dir)
        self._builtin = _environment(builtin_dir or builtin_templates())
        self._override = _environment(self.override_dir)

    def render(
        self,
        meeting: Meeting,
        transcript: Transcript,
        recipients: Sequence[Recipient],
        message_id: str,
        now: float,
    ) -> Rendered:
        """The message for these recipients, as bytes ready for SMTP DATA or a Maildir."""
        values = context(self.config, meeting, transcript, recipients)
        problems: list[str] = []
        subject, text, html = (self._template(name, values, problems) for name in TEMPLATE_NAMES)
        subject = header_text(subject) or header_text(meeting.title) or "Meeting transcript"
        message = EmailMessage(policy=_POLICY)
        _set_subject(message, subject)
        _set_addresses(message, "From", [(self.config.room.name, self.config.smtp.from_)])
        _set_addresses(message, "To", [(r.name, r.address) for r in recipients])
        message["Date"] = format_datetime(room_time(now, room_zone(self.config.room.timezone)))
        message["Message-ID"] = message_id
        # RFC 3834: vacation responders and the like should not answer the appliance.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        for filename, fmt, subtype in ATTACHMENTS:
            message.add_attachment(
                render_transcript(transcript, fmt), subtype=subtype, filename=filename
            )
        data = message.as_bytes()
        _check_headers(data, len(recipients))
        return Rendered(data, message_id, subject, tuple(problems))

    def _template(self, name: str, values: dict[str, Any], problems: list[str]) -> str:
        """An override template's output, or the built-in one's when the override fails."""
        path = self.override_dir / name
        if path.is_file():
            try:
                return self._override.get_template(name).render(values)
            except Exception as err:  # an admin's template may raise anything; the mail must go
                problems.append(_problem(path, err))
                _LOGGER.warning("template %s; using the built-in %s", problems[-1], name)
        try:
            return self._builtin.get_template(name).render(values)
        except (jinja2.TemplateError, OSError) as err:
            raise RenderError(f"built-in template {name}: {err}") from err


def _set_subject(message: EmailMessage, subject: str) -> None:
    """The Subject, its spaces kept however long it is.

    CPython's header refolding drops the space where it splits a run of encoded words, so a
    long non-ASCII subject lost spaces ("Möte om å, ä och ö" eleven times over). Such a
    subject is encoded here, the spaces inside the encoded words, and stored pre-folded.
    """
    if subject.isascii():
        message["Subject"] = subject
    else:
        message.set_raw("Subject", _encoded_words(subject, "Subject"))


def _set_addresses(message: EmailMessage, field: str, people: Sequence[tuple[str, str]]) -> None:
    """From or To: (display name, address) pairs, each name's spaces kept however long it is.

    CPython's folding of a long non-ASCII name put the fold between two encoded words, where
    mail readers drop the space ("Möte om å, ä och ö" three times over arrived "...och öMöte"),
    and could even encode the comma between two addresses, leaving one. Such names are
    encoded here, the spaces inside the encoded words, one address to a line.
    """
    named = [(header_text(name), address) for name, address in people]
    if all(name.isascii() for name, _ in named):
        message[field] = [Address(name, addr_spec=address) for name, address in named]
        return
    lines = []
    for name, address in named:
        spec = f"<{Address(addr_spec=address).addr_spec}>"  # checked as the ASCII path checks
        if not name:
            lines.append(spec)
            continue
        phrase = _encoded_words(name, field)
        last = len(phrase.rsplit("\n", 1)[-1])
        # A space before the address and a comma after it must fit, or it takes a line.
        gap = " " if last + len(spec) + 2 <= _MAX_COLUMNS else "\n "
        lines.append(f"{phrase}{gap}{spec}")
    message.set_raw(field, ",\n ".join(lines))


def _encoded_words(text: str, field: str) -> str:
    """Text as RFC 2047 encoded words, folded to 78 columns with the field's name before it."""
    return Header(text, "utf-8", header_name=field).encode()


def _check_headers(data: bytes, recipients: int) -> None:
    """Refuse a message whose header block parses back as anything but what we set."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
    names = sorted(k.lower() for k in parsed)
    if names != sorted(_HEADERS) or len(parsed["To"].addresses) != recipients:
        raise RenderError(f"the message headers did not survive serializing: {names}")


def check_templates(override_dir: Path = TEMPLATES_OVERRIDE) -> list[str]:
    """Problems with the override templates, one line each naming file and line; [] if none."""
    override_dir = Path(override_dir)
    if not override_dir.is_dir():
        return []
    problems = [
        f"{path}: not a template the appliance uses (known: {', '.join(TEMPLATE_NAMES)})"
        for path in sorted(override_dir.glob("*.j2"))
        if path.name not in TEMPLATE_NAMES
    ]
    env = _environment(override_dir)
    samples = _samples()
    for name in TEMPLATE_NAMES:
        path = override_dir / name
        if not path.is_file():
            continue
        try:
            source = path.read_bytes().decode("utf-8")
            tree = env.parse(source, name, str(path))
            unknown = _unknown_names(tree, set(samples[0]) | set(env.globals))
            if unknown:
                problems.extend(f"{path}:{line}: unknown variable {var!r}" for var, line in unknown)
                continue
            for values in samples:
                env.get_template(name).render(values)
        except Exception as err:  # anything a template can raise is a problem to report
            problems.append(_problem(path, err))
    return problems


def _unknown_names(tree: jinja2.nodes.Template, known: set[str]) -> list[tuple[str, int]]:
    """Variables used but neither given nor set in the template, with their first line."""
    undeclared = jinja2.meta.find_undeclared_variables(tree) - known
    first: dict[str, int] = {}
    for node in tree.find_all(jinja2.nodes.Name):
        if node.name in undeclared:
            first.setdefault(node.name, node.lineno)
    return sorted(first.items(), key=lambda item: (item[1], item[0]))


def _samples() -> list[dict[str, Any]]:
    """Two contexts to trial-render with: a full meeting and an empty one."""
    config = Config()
    full = Meeting(
        1,
        "Sample meeting",
        "en",
        "done",
        1_700_000_000.0,
        1_700_003_600.0,
        (),
        "microphone",
        3600.0,
        3600.0,
        "",
    )
    transcript = Transcript(
        (Segment(1.0, 4.0, "Hello."),), "en", 3600.0, (Gap(600.0, 660.0, "microphone lost"),)
    )
    people = [Recipient("a@example.com", "A"), Recipient("b@example.com")]
    empty = Meeting(2, "", "en", "done", 1_700_000_000.0, None, (), "microphone", 0.0, 0.0, "")
    return [
        context(config, full, transcript, people),
        context(config, empty, Transcript((), "en", 0.0), []),
    ]
