"""`appliance check-config`: the config file and what it points at, one line per problem."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance import config as config_file
from appliance import languages, paths
from appliance.errors import ApplianceError
from appliance.models import ggml, silero, speakers, store
from appliance.paths import TEMPLATES_OVERRIDE
from appliance.recording import capture

_SHOWN_DEVICES = 8


@dataclass(frozen=True)
class Context:
    """What every check gets: the parsed config, its file, and the environment."""

    config: config_file.Config
    path: Path
    environ: Mapping[str, str]

    def problem(self, key: str, text: str, allowed: str) -> str:
        """One line: the file, the key path, what is wrong, and what would be accepted."""
        return f"{self.path}: {key}: {text} (allowed: {allowed})"


Check = Callable[[Context], list[str]]


def check_model(ctx: Context) -> list[str]:
    """[transcriber] model resolves to a file in the models folder that verifies."""
    transcriber = ctx.config.transcriber
    problems = []
    if transcriber.quant not in ggml.QUANTS:
        problems.append(
            ctx.problem(
                "transcriber.quant",
                f"{transcriber.quant!r} is not a quant",
                "one of " + ", ".join(ggml.QUANTS),
            )
        )
    directory = paths.models_dir(transcriber.models_dir)
    names = [p.stem.removeprefix("ggml-") for p in store.installed(directory)]
    allowed = (
        f"a model installed in {directory} ({', '.join(names) or 'none yet'}) "
        "as NAME or NAME-QUANT, or a ggml .bin file path"
    )
    try:
        path = store.resolve(transcriber.model, directory, transcriber.quant)
        found = store.verify(path)
    except (ApplianceError, OSError) as err:
        problems.append(ctx.problem("transcriber.model", str(err), allowed))
        return problems
    language = ctx.config.room.language
    refusal = languages.refusal(language, path.name, found.hparams.multilingual)
    if refusal:
        fits = "auto and every language code" if found.hparams.multilingual else '"en"'
        problems.append(
            ctx.problem("room.language", f"{language!r}: {refusal}", f"{fits} with {path.name}")
        )
    return problems


def model_multilingual(config: config_file.Config) -> tuple[str, bool]:
    """The configured model's file name, and whether it can do other languages than English."""
    directory = paths.models_dir(config.transcriber.models_dir)
    path = store.resolve(config.transcriber.model, directory, config.transcriber.quant)
    return path.name, ggml.read_model(path).hparams.multilingual


def check_vad(ctx: Context) -> list[str]:
    """[vad] values fit together, and Silero VAD's weights are installed beside the models."""
    vad = ctx.config.vad
    problems = []
    if vad.pad_ms > vad.min_silence_ms:
        problems.append(
            ctx.problem(
                "vad.pad_ms",
                f"{vad.pad_ms} is longer than the pause that ends a segment",
                f"at most vad.min_silence_ms ({vad.min_silence_ms})",
            )
        )
    try:
        silero.verify(silero.path(paths.models_dir(ctx.config.transcriber.models_dir)))
    except ApplianceError as err:
        problems.append(ctx.problem("vad", str(err), f"appliance models install {silero.NAME}"))
    return problems


def check_speakers(ctx: Context) -> list[str]:
    """With [speakers] enabled, the speaker-embedding weights are installed and intact."""
    if not ctx.config.speakers.enabled:
        return []
    try:
        speakers.verify(speakers.path(paths.models_dir(ctx.config.transcriber.models_dir)))
    except ApplianceError as err:
        allowed = f"appliance models install {speakers.NAME}, or [speakers] enabled = false"
        return [ctx.problem("speakers", f"{err}; transcripts go out without speakers", allowed)]
    return []


def check_audio_device(ctx: Context) -> list[str]:
    """[audio] device, when set, names one capture device (an index or part of its name)."""
    device = ctx.config.audio.device
    if not device:
        return []
    try:
        import sounddevice  # PortAudio starts on import: only when a device is named
    except OSError as err:
        return [
            ctx.problem(
                "audio.device",
                f"cannot list capture devices: {err}",
                "a capture device index or part of its name",
            )
        ]
    inputs = [
        f"{i} {d['name']!r}"
        for i, d in enumerate(sounddevice.query_devices())
        if d["max_input_channels"] > 0
    ]
    shown = ", ".join(inputs[:_SHOWN_DEVICES]) + (", ..." if len(inputs) > _SHOWN_DEVICES else "")
    allowed = f"a capture device index or part of its name: {shown or 'none found'}"
    try:
        capture.find_device(sounddevice, device)  # as the daemon will pick it
    except ValueError as err:
        return [ctx.problem("audio.device", str(err), allowed)]
    return []


def _credential_file(ctx: Context, name: str) -> tuple[Path | None, str]:
    """Where a bare credential name is read from: $CREDENTIALS_DIRECTORY inside the service,
    else the file beside the config that the unit's LoadCredential= copies."""
    places = []
    if ctx.environ.get("CREDENTIALS_DIRECTORY"):
        places.append(Path(ctx.environ["CREDENTIALS_DIRECTORY"]) / name)
    places.append(ctx.path.parent / name)
    for place in places:
        if place.exists():
            return place, ""
    return None, " or ".join(str(p) for p in places)


def check_password_file(ctx: Context) -> list[str]:
    """[smtp] password_file, when AUTH is used: readable, not world-readable, not empty."""
    smtp = ctx.config.smtp
    allowed = (
        "an absolute path of a file no other user can read, or a systemd credential "
        'name such as "smtp-password"'
    )
    if not smtp.password_file:
        if smtp.username:
            return [ctx.problem("smtp.password_file", "empty, but smtp.username is set", allowed)]
        return []
    name = smtp.password_file
    if "/" not in name:
        path, tried = _credential_file(ctx, name)
        if path is None:
            return [
                ctx.problem("smtp.password_file", f"no credential {name!r}: no {tried}", allowed)
            ]
    elif not os.path.isabs(name):
        return [ctx.problem("smtp.password_file", f"{name!r} is a relative path", allowed)]
    else:
        path = Path(name)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            text = f"{path} is not a regular file"
        elif info.st_mode & 0o004:
            text = f"{path} is world-readable (mode {info.st_mode & 0o777:04o}): chmod o-r"
        elif not os.access(path, os.R_OK):
            text = f"{path} cannot be read by uid {os.getuid()}"
        elif smtp.username and info.st_size == 0:
            text = f"{path} is empty, but smtp.username is set"
        else:
            return []
    except OSError as err:
        text = f"{path}: {err.strerror}"
    return [ctx.problem("smtp.password_file", text, allowed)]


def check_state_dir(ctx: Context) -> list[str]:
    """[storage] state_dir exists and is writable, or can be created."""
    path = ctx.config.state_dir
    allowed = "a folder the service user can create and write"
    if not path.is_absolute():
        return [ctx.problem("storage.state_dir", f"{str(path)!r} is a relative path", allowed)]
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [ctx.problem("storage.state_dir", f"{existing} is not a folder", allowed)]
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == path else f"cannot be created in {existing}"
        return [ctx.problem("storage.state_dir", f"{path} {verb} by uid {os.getuid()}", allowed)]
    return []


def check_calendar(ctx: Context) -> list[str]:
    """[room] calendar: an http(s) URL, or an iCalendar file that exists."""
    calendar = ctx.config.room.calendar
    allowed = "an iCalendar file path, an http:// or https:// URL, or empty"
    if not calendar:
        return []
    if "://" in calendar:
        scheme = calendar.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            return [ctx.problem("room.calendar", f"{scheme}:// is not fetched", allowed)]
        return []
    path = Path(calendar)
    if not path.is_file():
        return [ctx.problem("room.calendar", f"{path}: no such file", allowed)]
    if not os.access(path, os.R_OK):
        return [
            ctx.problem("room.calendar", f"{path} cannot be read by uid {os.getuid()}", allowed)
        ]
    return []


def check_templates(ctx: Context) -> list[str]:
    """Override templates in /etc/meeting-appliance/templates parse and use known names."""
    from appliance.delivery.render import check_templates as problems  # jinja2 only here

    return problems(TEMPLATES_OVERRIDE)


def check_web(ctx: Context) -> list[str]:
    """[web]: a port the unprivileged service may bind, and a certificate and key that load."""
    import ssl

    web = ctx.config.web
    problems = []
    port = int(web.listen.rpartition(":")[2]) if web.listen else 0
    if 0 < port < 1024:
        # The unit grants no capabilities (CapabilityBoundingSet= is empty): no port under 1024.
        problems.append(ctx.problem("web.listen", f"port {port} needs root", "a port 1024-65535"))
    if bool(web.certificate) != bool(web.key):
        missing = "web.key" if web.certificate else "web.certificate"
        problems.append(ctx.problem(missing, "is empty", "both certificate and key, or neither"))
    elif web.certificate:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                web.certificate, web.key
            )
        except (OSError, ssl.SSLError) as err:
            problems.append(
                ctx.problem("web.certificate", f"cannot load it with its key: {err}", "PEM files")
            )
    return problems


# The checks check_config runs, in order: what they find, `run` refuses too.
CHECKS: list[Check] = [
    check_model,
    check_vad,
    check_speakers,
    check_password_file,
    check_state_dir,
    check_calendar,
    check_templates,
    check_web,
]


# Checked and shown as warnings, never refused: a microphone unplugged at boot must not stop
# the daemon (uploads still work, and `status` shows it missing until it is back).
WARNINGS: list[Check] = [check_audio_device]

CHECKED = (
    "the file's keys and values, transcriber.model and quant (installed, verified), "
    "room.language (the model can do it), the VAD's weights, smtp.password_file, "
    "storage.state_dir, room.calendar, the override templates, audio.device (a warning)"
)


@dataclass(frozen=True)
class Review:
    """What check-config and run found: the config (None if unreadable), problems, warnings."""

    path: Path
    config: config_file.Config | None
    problems: list[str]
    warnings: list[str]


def review(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    checks: Sequence[Check] | None = None,
    warnings: Sequence[Check] | None = None,
    must_exist: bool = False,
) -> Review:
    """Read the config file and run every check on it and what it names.

    must_exist: the path was named (--config), so a missing file is a problem, not defaults.
    """
    path = Path(path) if path is not None else config_file.default_path()
    try:
        config = config_file.load(path, must_exist=must_exist)
    except config_file.ConfigError as err:
        return Review(path, None, [str(err)], [])  # nothing else can be checked
    ctx = Context(config, path, os.environ if environ is None else environ)
    return Review(
        path,
        config,
        _run(ctx, CHECKS if checks is None else checks),
        _run(ctx, WARNINGS if warnings is None else warnings),
    )


def _run(ctx: Context, checks: Sequence[Check]) -> list[str]:
    lines: list[str] = []
    for check in checks:
        try:
            lines.extend(check(ctx))
        except Exception as err:  # a check that breaks is itself a problem line, not a traceback
            lines.append(f"{ctx.path}: {check.__name__} failed: {type(err).__name__}: {err}")
    return lines


def check_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    checks: Sequence[Check] | None = None,
) -> list[str]:
    """One line per problem with the config file and what it names; empty when all is well."""
    return review(path, environ=environ, checks=checks, warnings=()).problems
