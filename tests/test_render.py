"""The transcript email: content, escaping, header safety, time zones, override templates."""

from __future__ import annotations

import datetime
import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance import paths
from appliance.config import Config
from appliance.delivery.recipients import Recipient
from appliance.delivery.render import (
    TEMPLATE_NAMES,
    Renderer,
    check_templates,
    context,
    header_text,
    make_message_id,
)
from appliance.store import Meeting
from appliance.transcript import Gap, Segment, Transcript, render

# 2026-03-02 09:00:00 UTC, a Monday
STARTED = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC).timestamp()
PEOPLE = [Recipient("ann@example.com", "Ann Andersson"), Recipient("bo@example.com")]


def make_config(**room: object) -> Config:
    return config_module.parse({"room": {"name": "Blue room", **room}})


def make_meeting(title: str = "Budget review", stopped_after_s: float = 3900.0) -> Meeting:
    return Meeting(
        7,
        title,
        "en",
        "delivering",
        STARTED,
        STARTED + stopped_after_s,
        (),
        "microphone",
        stopped_after_s,
        stopped_after_s,
        "",
    )


TRANSCRIPT = Transcript(
    (Segment(2.0, 5.5, "Welcome, everyone."), Segment(700.0, 704.0, "We <b>lost</b> a & b.")),
    "en",
    3900.0,
    (Gap(600.0, 690.0, "microphone lost"),),
)


def rendered(
    config: Config | None = None,
    meeting: Meeting | None = None,
    override: Path = Path("/nonexistent"),
    transcript: Transcript = TRANSCRIPT,
    people: list[Recipient] = PEOPLE,
) -> tuple[EmailMessage, tuple[str, ...]]:
    renderer = Renderer(config or make_config(timezone="Europe/Stockholm"), override)
    result = renderer.render(
        meeting or make_meeting(), transcript, people, "<fixed.meeting-7@localhost>", STARTED + 4000
    )
    assert b"\r\n" in result.data and b"\n" not in result.data.replace(b"\r\n", b"")
    return email.message_from_bytes(result.data, policy=email.policy.default), result.problems


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


def test_message_has_subject_both_bodies_and_three_attachments() -> None:
    message, problems = rendered()
    assert problems == ()
    assert message["Subject"] == "Transcript: Budget review (Blue room, Monday 2 March 2026)"
    assert message["From"] == "Blue room <meeting-appliance@localhost>"
    assert [a.addr_spec for a in message["To"].addresses] == ["ann@example.com", "bo@example.com"]
    assert message["To"].addresses[0].display_name == "Ann Andersson"
    assert message["Message-ID"] == "<fixed.meeting-7@localhost>"
    assert message["Auto-Submitted"] == "auto-generated"
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert list(attachments) == ["transcript.txt", "transcript.srt", "transcript.vtt"]
    assert attachments["transcript.vtt"].get_content_type() == "text/vtt"
    for name, part in attachments.items():
        # text/* travels with CRLF line ends (RFC 2046 canonical form)
        content = part.get_content().replace("\r\n", "\n")
        assert content == render(TRANSCRIPT, name.rsplit(".", 1)[1])


def test_bodies_carry_times_in_room_zone_duration_participants_transcript_and_gaps() -> None:
    text, html = bodies(rendered()[0])
    for body in (text, html):
        assert "Blue room, Monday 2 March 2026, 10:00" in body  # 09:00 UTC is 10:00 CET
        assert "11:05" in body and "CET" in body and "1 h 05 min" in body
        assert "Ann Andersson" in body and "bo@example.com" in body
        assert "00:00:02" in body and "Welcome, everyone." in body
        assert "00:10:00" in body and "00:11:30" in body and "microphone lost" in body
    assert text.index("Welcome") < text.index("microphone lost") < text.index("lost</b>")
    assert "[00:11:40] We <b>lost</b> a & b." in text


def test_html_escapes_titles_names_and_transcript_text() -> None:
    people = [Recipient("ann@example.com", "<i>Ann</i>")]
    message, _ = rendered(meeting=make_meeting("<script>alert(1)</script> & co"), people=people)
    _, html = bodies(message)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "We &lt;b&gt;lost&lt;/b&gt; a &amp; b." in html
    assert "&lt;i&gt;Ann&lt;/i&gt;" in html and "<i>" not in html


@pytest.mark.parametrize(
    "title",
    [
        "x\r\nBcc: evil@x.com",
        "x\nBcc: evil@x.com",
        "x\u2028Bcc: evil@x.com",
        "=?utf-8?q?x=0D=0ABcc:_evil@x.com?=",
        "ok =?utf-8?b?eA0KQmNjOiBldmlsQHguY29t?= ok",
    ],
)
def test_titles_and_names_cannot_add_headers(title: str) -> None:
    people = [Recipient("ann@example.com", title), Recipient("bo@example.com")]
    message, _ = rendered(meeting=make_meeting(title), people=people)
    assert sorted(message.keys()) == sorted(
        [
            "Subject",
            "From",
            "To",
            "Date",
            "Message-ID",
            "Auto-Submitted",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert [a.addr_spec for a in message["To"].addresses] == ["ann@example.com", "bo@example.com"]
    subject = message["Subject"]
    assert "\n" not in subject and "\r" not in subject
    # The title stays literal text, on one line, instead of being decoded into headers.
    assert header_text(title).replace("\u200b", "") in subject.replace("\u200b", "")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("  two\r\n lines\t", "two lines"),
        ("nul\x00and\x1fbell", "nul and bell"),
        ("=?utf-8?q?x?=", "=\u200b?utf-8?q?x?="),
    ],
)
def test_header_text(value: str, expected: str) -> None:
    assert header_text(value) == expected


def test_time_zone_is_the_rooms_and_system_local_when_empty() -> None:
    meeting = make_meeting()
    new_york = context(make_config(timezone="America/New_York"), meeting, TRANSCRIPT, PEOPLE)
    assert (new_york["start_time"], new_york["timezone"]) == ("04:00", "EST")
    local = context(make_config(), meeting, TRANSCRIPT, PEOPLE)
    expected = datetime.datetime.fromtimestamp(STARTED).astimezone()
    assert local["start_time"] == f"{expected:%H:%M}"


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (0.0, "0 min"),
        (29.0, "0 min"),
        (31.0, "1 min"),
        (3540.0, "59 min"),
        (3600.0, "1 h 00 min"),
        (3900.0, "1 h 05 min"),
        (36000.0, "10 h 00 min"),
    ],
)
def test_duration(seconds: float, shown: str) -> None:
    values = context(make_config(), make_meeting(stopped_after_s=seconds), TRANSCRIPT, PEOPLE)
    assert values["duration"] == shown


def test_an_empty_transcript_still_makes_an_email() -> None:
    message, _ = rendered(transcript=Transcript((), "en", 0.0))
    text, html = bodies(message)
    assert "No speech was transcribed." in text and "No speech was transcribed." in html
    assert len(list(message.iter_attachments())) == 3


def test_message_id_is_under_the_senders_domain_and_unique() -> None:
    first, second = make_message_id(7, "room@corp.example"), make_message_id(7, "room@corp.example")
    assert first != second
    assert first.startswith("<") and first.endswith(".meeting-7@corp.example>")


def test_a_working_override_replaces_the_builtin(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("[{{ room }}] {{ title }}\n")
    message, problems = rendered(override=tmp_path)
    assert problems == ()
    assert message["Subject"] == "[Blue room] Budget review"
    assert "Welcome, everyone." in bodies(message)[0]  # the built-in text body


@pytest.mark.parametrize(
    "name, source, line, what",
    [
        (
            "body.html.j2",
            "<p>{{ title }}</p>\n{% for x in lines %}\n<p>{{ x.text }\n",
            3,
            "unexpected '}'",
        ),
        ("body.txt.j2", "{{ title }}\n\n{{ no_such_thing }}\n", 3, "'no_such_thing' is undefined"),
        (
            "subject.txt.j2",
            "{{ title }}\n{{ lines[0].missing }}\n",
            2,
            "has no attribute 'missing'",
        ),
        ("body.txt.j2", "{{ title }}\n{{ 1 // 0 }}\n", 2, "division"),
    ],
)
def test_a_broken_override_falls_back_to_builtin_and_names_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, source: str, line: int, what: str
) -> None:
    (tmp_path / name).write_text(source)
    message, problems = rendered(override=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / name}:{line}: ") and what in problems[0]
    assert f"{tmp_path / name}:{line}" in caplog.text
    builtin, _ = rendered()
    assert message["Subject"] == builtin["Subject"]
    assert bodies(message) == bodies(builtin)


def test_check_templates_reports_each_problem_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("{{ title }}\n")  # fine
    (tmp_path / "body.txt.j2").write_text("ok\n{% if has_speech %}\n{{ titel }}\n{% endif %}\n")
    (tmp_path / "body.html.j2").write_bytes(b"<p>ok</p>\n<p>\xff</p>\n")
    (tmp_path / "subjct.txt.j2").write_text("typo in the file name\n")
    problems = check_templates(tmp_path)
    assert problems == [
        f"{tmp_path / 'subjct.txt.j2'}: not a template the appliance uses (known: "
        f"{', '.join(TEMPLATE_NAMES)})",
        f"{tmp_path / 'body.txt.j2'}:3: unknown variable 'titel'",
        f"{tmp_path / 'body.html.j2'}:2: not UTF-8 text",
    ]


def test_check_templates_finds_errors_only_an_empty_meeting_reaches(tmp_path: Path) -> None:
    (tmp_path / "body.txt.j2").write_text("{% if not lines %}\n{{ gaps[0].text }}\n{% endif %}\n")
    [problem] = check_templates(tmp_path)
    assert problem.startswith(f"{tmp_path / 'body.txt.j2'}:2: ")


def test_check_templates_passes_builtins_and_a_missing_folder(tmp_path: Path) -> None:
    assert check_templates(paths.builtin_templates()) == []
    assert check_templates(tmp_path / "missing") == []


def test_speakers_are_paragraphs_in_both_bodies() -> None:
    labelled = Transcript(
        (
            Segment(2.0, 4.0, "Welcome,", "Speaker 1"),
            Segment(4.0, 6.0, "everyone.", "Speaker 1"),
            Segment(6.5, 8.0, "Thanks <all>.", "Speaker 2"),
            Segment(9.0, 10.0, "Right.", "Speaker 1"),
        ),
        "en",
        3900.0,
    )
    text, html = bodies(rendered(transcript=labelled)[0])
    text = text.replace("\r\n", "\n")
    assert "[00:00:02] Speaker 1: Welcome, everyone.\n[00:00:06] Speaker 2: Thanks <all>.\n" in text
    assert "[00:00:09] Speaker 1: Right." in text
    assert "<b>Speaker 2:</b> Thanks &lt;all&gt;." in html
    assert "Speaker" not in bodies(rendered()[0])[0]


@pytest.mark.parametrize("word", ["Ärlig ", "Möte om å, ä och ö ", "日本語の会議 "])
def test_long_non_ascii_subjects_keep_their_spaces(word: str) -> None:
    """Python's refolding dropped the space between some encoded words of a long subject."""
    for repeats in range(1, 40):
        title = (word * repeats).strip()
        message, _ = rendered(meeting=make_meeting(title))
        assert title in message["Subject"], repeats
        header = message.as_bytes(policy=email.policy.SMTP).split(b"\r\n\r\n")[0]
        assert max(len(line) for line in header.split(b"\r\n")) <= 78


def _rfc2047_names(data: bytes, field: str) -> list[str]:
    """The display names of an address header, decoded as RFC 2047 says (whitespace between
    two encoded words is not text) and as mail readers do; CPython's own address parser keeps
    that whitespace, so it cannot judge this."""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)[field]
    return [str(make_header(decode_header(name))) for name, _ in getaddresses([raw])]


@pytest.mark.parametrize("word", ["Ärlig ", "Möte om å, ä och ö ", "日本語の会議 ", "Östra Ängen "])
def test_long_non_ascii_display_names_keep_their_spaces(word: str) -> None:
    """CPython folded a long non-ASCII name between two encoded words, where a reader drops
    the space ("Möte om å, ä och ö" three times over came out "...och öMöte...")."""
    for repeats in range(1, 25):
        name = (word * repeats).strip()
        config = config_module.parse({"room": {"name": name, "timezone": "Europe/Stockholm"}})
        people = [
            Recipient("ann@example.com", name),
            Recipient("bo@example.com", "Bo"),
            Recipient("cy@example.com"),
        ]
        result = Renderer(config, Path("/nonexistent")).render(
            make_meeting(), TRANSCRIPT, people, "<fixed.meeting-7@localhost>", STARTED + 4000
        )
        assert _rfc2047_names(result.data, "From") == [name], repeats
        assert _rfc2047_names(result.data, "To") == [name, "Bo", ""], repeats
        header = result.data.split(b"\r\n\r\n")[0]
        assert max(len(line) for line in header.split(b"\r\n")) <= 78, repeats
        parsed = email.message_from_bytes(result.data, policy=email.policy.default)
        addresses = [a.addr_spec for a in parsed["To"].addresses]
        assert addresses == ["ann@example.com", "bo@example.com", "cy@example.com"]
