"""The daemon's subcommands: `run`, and `start`/`stop`/`status`/... over the control socket."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import sys
from pathlib import Path
from typing import Any

from appliance import config as config_file
from appliance.addresses import address_problem
from appliance.errors import UsageError
from appliance.service.control import ControlError, request
from appliance.transcript import FORMATS

_LOGGER = logging.getLogger(__name__)
_WAIT_TIMEOUT_S = 3600.0  # `stop --wait` on a long backlog


def _config(args: argparse.Namespace) -> config_file.Config:
    return config_file.load(Path(args.config) if args.config else None, bool(args.config))


def _cmd_run(args: argparse.Namespace) -> int:
    if args.dump_config:
        config = _config(args)
        print(f"# effective config from {config.source}")
        print(config.to_toml(), end="")
        return 0
    from appliance.service import checks
    from appliance.service.notify import setup_logging

    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    # What check-config refuses, run refuses, with the same lines: nothing is found wrong
    # later, one meeting at a time (a missing password file retried for days).
    found = checks.review(Path(args.config) if args.config else None, must_exist=bool(args.config))
    for line in found.problems:
        print(line, file=sys.stderr)
    if found.config is None or found.problems:
        return 1
    _LOGGER.info("config: %s", found.config.source)
    for line in found.warnings:
        _LOGGER.warning("%s", line)
    from appliance.service.daemon import Daemon  # the engine and audio stack: only for run

    return asyncio.run(Daemon(found.config).run())


def _cmd_start(args: argparse.Namespace) -> int:
    config = _config(args)
    for address in args.to or ():
        if problem := address_problem(address):
            raise UsageError(f"--to {address!r} is not an email address we can send to: {problem}")
    speed = 1.0 if args.realtime else args.speed
    if speed and not args.from_file:
        raise UsageError("--realtime and --speed need --from-file")
    fields: dict[str, Any] = {"title": args.title, "to": args.to, "language": args.language}
    if args.from_file:
        path = Path(args.from_file).resolve()
        if not path.exists():
            raise UsageError(f"{args.from_file}: no such file")
        if not path.is_file():
            raise UsageError(f"{args.from_file}: not a regular file")
        fields.update(from_file=str(path), speed=speed)
    reply = request(config.socket, "start", **{k: v for k, v in fields.items() if v})
    print(reply["meeting"]["id"])
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    reply = request(
        _config(args).socket,
        "stop",
        timeout_s=_WAIT_TIMEOUT_S if args.wait else 30.0,
        wait=args.wait,
    )
    print(reply["meeting"]["id"])
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    retried = request(_config(args).socket, "retry")["retried"]
    print(f"retrying {retried} recipient(s) now")
    return 0


def _cmd_resend(args: argparse.Namespace) -> int:
    print(request(_config(args).socket, "resend", id=args.id)["meeting"]["id"])
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    print(request(_config(args).socket, "delete", id=args.id)["meeting"]["id"])
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    print(request(_config(args).socket, "cancel")["meeting"]["id"])
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    reply = request(_config(args).socket, "status")
    if args.json:
        print(json.dumps({k: v for k, v in reply.items() if k != "ok"}, indent=2))
        return 0
    meeting = reply.get("meeting")
    print(f"state: {reply['state']}")
    if meeting:
        print(f"meeting: {meeting['id']} {meeting['title']} ({meeting['state']})")
    if reply["state"] in ("recording", "finishing"):
        print(
            f"elapsed: {_duration(reply['elapsed_s'])}, recorded {_duration(reply['audio_s'])}, "
            f"not yet transcribed {reply['backlog_s']:.1f} s"
        )
    if reply.get("last_line"):
        print(f"last line: {reply['last_line']}")
    counts = reply.get("outbox") or {}
    print("outbox: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "empty"))
    for problem in reply.get("problems") or ():
        print(f"problem: {problem}")
    return 0


def _local_db(config: config_file.Config):
    """The state database read directly, for when the daemon is not running."""
    from appliance.store import Database

    if not config.database.exists():
        raise ControlError(f"{config.database} does not exist (no meeting recorded yet)")
    return Database(config.database)


def _cmd_meetings(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        meetings = request(config.socket, "meetings")["meetings"]
    except ControlError as err:
        if "not running" not in str(err):
            raise
        db = _local_db(config)
        meetings = [m.to_json() for m in db.meetings()]
        db.close()
    if args.json:
        print(json.dumps(meetings, indent=2))
        return 0
    for m in meetings:
        started = datetime.datetime.fromtimestamp(m["started_at"]).strftime("%Y-%m-%d %H:%M")
        print(
            f"{m['id']:>5}  {started}  {_duration(m['audio_s']):>8}  {m['state']:<10}  {m['title']}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        text = request(config.socket, "show", id=args.id, format=args.format)["text"]
    except ControlError as err:
        if "not running" not in str(err):
            raise
        from appliance.transcript import render

        db = _local_db(config)
        if db.meeting(args.id) is None:
            raise UsageError(f"no meeting {args.id}") from err
        text = render(db.transcript(args.id), args.format)
        db.close()
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    from appliance.delivery import retention
    from appliance.delivery.outbox import Outbox

    config = _config(args)
    db = _local_db(config)
    try:
        print(retention.purge(db, config, Outbox(db, config)))
    finally:
        db.close()
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def add_commands(commands: Any) -> None:
    """Register the daemon's subcommands on the top-level subparsers."""
    run = commands.add_parser("run", help="run the recorder daemon (systemd starts this)")
    run.add_argument(
        "--dump-config",
        action="store_true",
        help="print the effective config (secrets masked) and exit",
    )
    run.add_argument("--verbose", action="store_true", help="log at debug level")
    run.set_defaults(func=_cmd_run)

    start = commands.add_parser("start", help="start a meeting; prints its id")
    start.add_argument("--title", help="meeting title (default: room name and time)")
    start.add_argument(
        "--to",
        action="append",
        metavar="ADDR",
        help="send the transcript to ADDR (repeat for more; default: the room "
        "calendar's attendees, else [room] default_participants)",
    )
    start.add_argument(
        "--language", help="spoken language code, or auto (default: [room] language)"
    )
    start.add_argument(
        "--from-file",
        metavar="AUDIO",
        help="record from an audio file instead of the microphone (e.g. a phone recording)",
    )
    pace = start.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime", action="store_true", help="with --from-file: pace it like a live microphone"
    )
    pace.add_argument(
        "--speed",
        type=float,
        default=0.0,
        metavar="X",
        help="with --from-file: "
        "pace it at X times real time (default: as fast as it is transcribed)",
    )
    start.set_defaults(func=_cmd_start)

    stop = commands.add_parser("stop", help="stop the meeting; prints its id")
    stop.add_argument(
        "--wait",
        action="store_true",
        help="return once the transcript is final and delivery has been tried",
    )
    stop.set_defaults(func=_cmd_stop)

    cancel = commands.add_parser("cancel", help="stop and discard the meeting (audio and text)")
    cancel.set_defaults(func=_cmd_cancel)

    retry = commands.add_parser(
        "retry",
        help="try now every recipient waiting for a retry (README, Delivery: the schedule)",
    )
    retry.set_defaults(func=_cmd_retry)

    resend = commands.add_parser(
        "resend", help="email a finished meeting's transcript again, as a new message"
    )
    resend.add_argument("id", type=int, help="meeting id (see `appliance meetings`)")
    resend.set_defaults(func=_cmd_resend)

    delete = commands.add_parser(
        "delete", help="delete a finished meeting: its record, transcript, audio and email"
    )
    delete.add_argument("id", type=int, help="meeting id (see `appliance meetings`)")
    delete.set_defaults(func=_cmd_delete)

    status = commands.add_parser("status", help="what the daemon is doing")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_cmd_status)

    meetings = commands.add_parser("meetings", help="list meetings")
    meetings.add_argument("--json", action="store_true", help="print JSON")
    meetings.set_defaults(func=_cmd_meetings)

    show = commands.add_parser("show", help="print one meeting's transcript")
    show.add_argument("id", type=int, help="meeting id (see `appliance meetings`)")
    show.add_argument("--format", choices=FORMATS, default="txt", help="output format")
    show.set_defaults(func=_cmd_show)

    purge = commands.add_parser(
        "purge",
        help="delete audio and transcripts past their keep time (the daemon also does this daily)",
    )
    purge.set_defaults(func=_cmd_purge)
