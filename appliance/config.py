"""The appliance's one config file (TOML) read into frozen dataclasses, checked key by key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config_values import (
    MAX_TERM,
    MAX_TERMS,
    ConfigError,
    check,
    printable,
    setting,
    shown,
    toml_value,
)

DEFAULT_PATH = Path("/etc/meeting-appliance/config.toml")
ENV_PATH = "MEETING_APPLIANCE_CONFIG"
_MASK = "********"


@dataclass(frozen=True)
class RoomConfig:
    """The room the appliance stands in."""

    name: str = setting("Meeting room", "Room name shown in the email.")
    language: str = setting(
        "en", 'Spoken language (ISO 639-1), or "auto" to detect per meeting.', kind="language"
    )
    default_participants: tuple[str, ...] = setting(
        (),
        "Who gets the transcript when neither `start --to` nor the calendar names anyone.",
        kind="addresses",
    )
    calendar: str = setting("", "iCalendar file path or http(s) URL on the LAN; empty for none.")
    timezone: str = setting(
        "",
        "IANA time zone for dates in the email (e.g. Europe/Stockholm); empty for the system's.",
        kind="timezone",
    )
    vocabulary: tuple[str, ...] = setting(
        (),
        "Names and terms said in this room, given to the "
        "model as its prompt so it spells them right "
        f"(at most {MAX_TERMS} of {MAX_TERM} characters).",
        kind="term",
        max_items=MAX_TERMS,
    )


@dataclass(frozen=True)
class AudioConfig:
    """The microphone."""

    device: str = setting(
        "", "Capture device name (or part of it) or index; empty for the system default."
    )
    samplerate: int = setting(
        0,
        "Rate to open the device at, Hz; 0 for its default rate. 16000 "
        "skips a resampling step where the device or sound server "
        "converts well (PulseAudio, PipeWire).",
        min=0,
        max=192000,
    )
    retry_max_s: float = setting(
        30.0,
        "Longest wait between attempts to reopen a lost microphone, seconds.",
        min=1.0,
        max=600.0,
    )


@dataclass(frozen=True)
class VadConfig:
    """The voice-activity detector (Silero VAD) that cuts audio into speech segments."""

    threshold: float = setting(
        0.35,
        "Speech probability that opens a segment, 0 to 1; lower "
        "keeps more (Whisper still drops what it hears as silence).",
        min=0.05,
        max=0.95,
    )
    pad_ms: int = setting(400, "Audio kept before and after speech, milliseconds.", min=0, max=2000)
    min_silence_ms: int = setting(
        2000,
        "Pause that ends a segment, milliseconds; shorter pauses stay inside it.",
        min=100,
        max=10000,
    )
    min_speech_ms: int = setting(
        250,
        "Speech a segment needs, milliseconds; shorter sounds are dropped as clicks.",
        min=0,
        max=2000,
    )
    # 30 s: Whisper's window (appliance.engine.windows.WINDOW_S); not imported, so reading the config
    # loads no numpy.
    max_segment_s: float = setting(
        30.0, "Longest segment, seconds (a window holds 30 s).", min=5.0, max=30.0
    )


@dataclass(frozen=True)
class TranscriberConfig:
    """The whisper.cpp engine."""

    model: str = setting(
        "tiny.en",
        "Model name (installed with `appliance models install`), "
        "NAME-QUANT, or a path to a ggml .bin file.",
    )
    # q5_1, not the catalog's q8_0: the daemon's peak RSS was 185 MB with it, 202 MB with q8_0
    # (`python -m benchmarks.daemon --minutes 20`, once with each, 30 s windows); both kept up
    # live. Now, with every window at 1500 positions and Silero VAD, the daemon idles at 194 MB
    # and peaks at 252 MB over an hour, 221 and 362 MB with [speakers] on (docs/benchmarks.md).
    quant: str = setting("q5_1", "Quantization used when `model` is a bare name.")
    models_dir: str = setting(
        "", "Folder of installed models; empty for the default (/var/lib/meeting-appliance/models)."
    )
    workers: int = setting(1, "Decoding workers fed from one queue.", min=1, max=8)
    beam_size: int = setting(
        1,
        'Beam search width; 1 decodes greedily (README, "The front '
        'end": what a wider beam costs and gains).',
        min=1,
        max=8,
    )
    threads: int = setting(2, "Threads per worker.", min=1, max=64)
    queue_segments: int = setting(
        8, "Segments waiting in memory before the rest wait on disk.", min=1, max=1000
    )


@dataclass(frozen=True)
class SpeakersConfig:
    """Speaker turns: who said what, labelled "Speaker 1".."Speaker N" in every transcript."""

    enabled: bool = setting(
        True, "Label speaker turns (needs `appliance models install speakers`)."
    )
    max_speakers: int = setting(
        8,
        "Most speakers one meeting is split into; fewer are found when fewer talk.",
        min=1,
        max=32,
    )


@dataclass(frozen=True)
class SmtpConfig:
    """The mail server transcripts go out through; no host means a local Maildir."""

    host: str = setting("", "SMTP server; empty to deliver into state_dir/maildir instead.")
    port: int = setting(587, "SMTP port.", min=1, max=65535)
    security: str = setting("starttls", "Connection security.", choices=("starttls", "tls", "none"))
    username: str = setting("", "AUTH user name; empty for no AUTH.")
    password_file: str = setting(
        "",
        "File holding the AUTH password (or a systemd credential "
        "name under $CREDENTIALS_DIRECTORY).",
        secret=True,
    )
    from_: str = setting(
        "meeting-appliance@localhost", "Sender address.", key="from", kind="address"
    )
    timeout_s: float = setting(60.0, "Deadline for one message, seconds.", min=1.0, max=3600.0)


@dataclass(frozen=True)
class DeliveryConfig:
    """Who may receive transcripts and how long to keep trying."""

    allowed_domains: tuple[str, ...] = setting(
        (), "Only these recipient domains get mail; empty allows all.", kind="domains"
    )
    give_up_days: float = setting(
        5.0, "Stop retrying a recipient after this many days.", min=0.01, max=365.0
    )


@dataclass(frozen=True)
class StorageConfig:
    """Where the appliance keeps its state and for how long."""

    state_dir: str = setting(
        "/var/lib/meeting-appliance", "Meetings database, audio spool, outbox and Maildir."
    )
    keep_audio_days: float = setting(
        0.0, "Days to keep a meeting's audio after its transcript is final.", min=0.0, max=3650.0
    )
    keep_transcripts_days: float = setting(
        7.0, "Days to keep a transcript once everyone has it.", min=0.0, max=3650.0
    )
    # 500 MB: a meeting's audio takes 115 MB an hour (PCM16 at 16 kHz), so four hours fit.
    min_free_mb: int = setting(
        500,
        "Free space state_dir needs for a meeting to start, MB; while recording, audio stops "
        "being kept once half of it is left (the rest is for the database and the email).",
        min=1,
        max=1_000_000,
    )


@dataclass(frozen=True)
class ControlConfig:
    """The local control socket the `appliance` commands talk to."""

    socket: str = setting("/run/meeting-appliance/control.sock", "Unix socket path (mode 0660).")


@dataclass(frozen=True)
class ButtonConfig:
    """The start/stop button and its LED (BCM pin numbers; -1 for none)."""

    pin: int = setting(-1, "Button GPIO (BCM); -1 for no button.", min=-1, max=53)
    led_pin: int = setting(-1, "LED GPIO (BCM); -1 for no LED.", min=-1, max=53)
    hold_s: float = setting(
        3.0, "Holding the button this long cancels the meeting, seconds.", min=0.5, max=30.0
    )


@dataclass(frozen=True)
class WebConfig:
    """The HTTP API on the office network (README, "The HTTP API"); off unless listen is set."""

    listen: str = setting(
        "",
        'HOST:PORT to serve the API on, e.g. "0.0.0.0:8080"; empty for no server.',
        kind="listen",
    )
    certificate: str = setting(
        "", "PEM certificate chain file; with `key`, the API is served over TLS (https)."
    )
    key: str = setting(
        "", "PEM private key file of the certificate (readable by the service only)."
    )
    keep_hours: float = setting(
        24.0,
        "Hours a finished transcription is kept for those who have not fetched it yet.",
        min=0.01,
        max=8760.0,
    )
    max_upload_mb: int = setting(200, "Largest request body accepted, megabytes.", min=1, max=4096)
    max_queue: int = setting(
        20, "Transcriptions waiting or running before new ones get 429.", min=1, max=10000
    )


@dataclass(frozen=True)
class Config:
    """Every section of the config file."""

    room: RoomConfig = field(default_factory=RoomConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    transcriber: TranscriberConfig = field(default_factory=TranscriberConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = field(default="(defaults)", compare=False)

    @property
    def state_dir(self) -> Path:
        """The state folder as a path."""
        return Path(self.storage.state_dir)

    @property
    def database(self) -> Path:
        """The SQLite file of meetings and the outbox."""
        return self.state_dir / "appliance.db"

    @property
    def spool_dir(self) -> Path:
        """Raw audio of meetings, one file per meeting."""
        return self.state_dir / "spool"

    @property
    def maildir(self) -> Path:
        """Local delivery target when no SMTP host is set."""
        return self.state_dir / "maildir"

    @property
    def outbox_dir(self) -> Path:
        """Rendered messages waiting for (or kept after) delivery."""
        return self.state_dir / "outbox"

    @property
    def api_spool_dir(self) -> Path:
        """Audio sent to the HTTP API, one file per transcription, until it is deleted."""
        return self.state_dir / "api"

    @property
    def socket(self) -> Path:
        """The control socket path."""
        return Path(self.control.socket)

    def to_toml(self, mask_secrets: bool = True) -> str:
        """The effective config as TOML, secrets masked."""
        lines: list[str] = []
        for section in _sections():
            lines.append(f"[{section.name}]")
            value = getattr(self, section.name)
            for item in dataclasses.fields(value):
                shown = getattr(value, item.name)
                if mask_secrets and item.metadata.get("secret") and shown:
                    shown = _MASK
                lines.append(f"{_key(item)} = {toml_value(shown)}")
            lines.append("")
        return "\n".join(lines)


def _sections() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name != "source"]


def _key(item: dataclasses.Field) -> str:
    return item.metadata.get("key", item.name)


def default_path() -> Path:
    """$MEETING_APPLIANCE_CONFIG when set, else /etc/meeting-appliance/config.toml."""
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: Path | None = None, must_exist: bool = False) -> Config:
    """Read and check the config file; a missing file means every default, unless must_exist
    (a path someone typed: a misspelling must not silently become the defaults)."""
    path = Path(path) if path is not None else default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"{path}: no such file") from None
        return Config(source=f"{path} (missing: defaults)")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse(data, str(path))


def parse(data: Mapping[str, Any], source: str = "config") -> Config:
    """Check a parsed TOML document and build the Config; errors name source and key path."""
    sections = {s.name: s for s in _sections()}
    built: dict[str, Any] = {}
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(
                f"{source}: unknown section [{printable(name)}] (known: {', '.join(sections)})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {shown(table)}")
        built[name] = _section(sections[name].default_factory, table, f"{source}: {name}")
    return Config(**built, source=source)


def _section(cls: type, table: Mapping[str, Any], where: str) -> Any:
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        item = fields.get(key)
        if item is None:
            raise ConfigError(f"{where}.{printable(key)}: unknown key (known: {', '.join(fields)})")
        values[item.name] = check(item, value, f"{where}.{key}")
    return cls(**values)


def describe() -> list[tuple[str, str, Any, str, dict[str, Any]]]:
    """Every key as (section, key, default, doc, rules), for the reference and the example."""
    rows = []
    for section in _sections():
        for item in dataclasses.fields(section.default_factory):
            default = (
                item.default if item.default is not dataclasses.MISSING else item.default_factory()
            )
            rules = {k: v for k, v in item.metadata.items() if k not in ("doc", "key")}
            rows.append((section.name, _key(item), default, item.metadata["doc"], rules))
    return rows
