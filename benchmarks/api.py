"""`python -m benchmarks.api`: the HTTP API under 8 clients against `appliance transcribe`.

Runs `appliance run` as its own process with `[web] listen` on loopback and the same model,
workers and threads as the `appliance transcribe` it is compared with; N clients each post the
English clips of the manifest one at a time (audio file as the body) and poll until the
transcript is done. Reports audio seconds per wall second for both, the time from posting a
clip to holding its finished transcript (p50, p95), and the word error rate of each, and writes
the "HTTP API" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import aiohttp
import jiwer
import soundfile

from appliance.evaluate import Clip, normalize, read_manifest
from benchmarks import report_sections
from benchmarks.appliance_cli import APPLIANCE, check_running, cli, running
from benchmarks.machine import command_line, describe

SECTION = "## HTTP API"
_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = _ROOT / "tests" / "data" / "speech" / "manifest.jsonl"
_POLL_S = 0.25  # a client looks this often, so a latency is at most this much late
URL = "/api/v1/transcriptions"


def _say(text: str) -> None:
    print(f"bench api: {text}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wer(clips: list[Clip], texts: list[str]) -> float:
    references = [normalize(c.text, c.language) for c in clips]
    hypotheses = [normalize(t, c.language) for c, t in zip(clips, texts, strict=True)]
    return jiwer.wer(references, hypotheses)


def transcribecli(clips: list[Clip], args: argparse.Namespace) -> tuple[float, list[str]]:
    """`appliance transcribe` on every clip in one process: wall time and the texts."""
    started = time.perf_counter()
    output = subprocess.run(
        [
            *APPLIANCE,
            "transcribe",
            *(str(c.audio) for c in clips),
            "--model",
            f"{args.model}-{args.quant}",
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall_s = time.perf_counter() - started
    texts: list[list[str]] = []
    for line in output.splitlines():
        if line.startswith("==> ") and line.endswith(" <=="):
            texts.append([])
        else:
            texts[-1].append(line)
    return wall_s, [" ".join(t) for t in texts]


async def _client(
    http: aiohttp.ClientSession, work: asyncio.Queue, results: dict[int, tuple[float, str]]
) -> None:
    while not work.empty():
        index, clip = work.get_nowait()
        job = f"clip-{index}"
        began = time.perf_counter()
        async with http.post(f"{URL}?id={job}", data=clip.audio.read_bytes()) as response:
            if response.status != 202:
                raise RuntimeError(f"{clip.audio}: {response.status} {await response.text()}")
        while True:
            async with http.get(f"{URL}/{job}") as response:
                answer = await response.json()
            if answer["status"] in ("done", "failed"):
                break
            await asyncio.sleep(_POLL_S)
        if answer["status"] != "done":
            raise RuntimeError(f"{clip.audio}: {answer['error']}")
        results[index] = (time.perf_counter() - began, answer["text"])


async def _post_all(base: str, token: str, clips: list[Clip], clients: int) -> dict:
    work: asyncio.Queue = asyncio.Queue()
    for item in enumerate(clips):
        work.put_nowait(item)
    results: dict[int, tuple[float, str]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers) as http:
        started = time.perf_counter()
        await asyncio.gather(*(_client(http, work, results) for _ in range(clients)))
        wall_s = time.perf_counter() - started
    return {"wall_s": wall_s, "results": [results[i] for i in range(len(clips))]}


def transcribe_api(clips: list[Clip], args: argparse.Namespace, scratch: Path) -> dict:
    """Start the daemon with the API, make a token, post every clip from N clients."""
    port = _free_port()
    config = scratch / "config.toml"
    config.write_text(
        f'[storage]\nstate_dir = "{scratch / "state"}"\n'
        f'[control]\nsocket = "{scratch / "control.sock"}"\n'
        f'[transcriber]\nmodel = "{args.model}"\nquant = "{args.quant}"\n'
        f"workers = {args.workers}\nthreads = {args.threads}\n"
        f'[web]\nlisten = "127.0.0.1:{port}"\nmax_queue = {max(20, args.clients)}\n'
    )
    token = cli(config, "tokens", "add", "bench").strip()
    log = scratch / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    with running(config, log) as daemon:
        while True:
            check_running(daemon, log)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        measured = asyncio.run(_post_all(base, token, clips, args.clients))
    return measured


def render(document: dict) -> str:
    """The section."""
    m, api, cli = document["machine"], document["api"], document["cli"]
    audio_s = document["audio_s"]
    p50, p95 = api["p50_s"], api["p95_s"]
    return "\n".join(
        [
            SECTION,
            "",
            f"Written by `{document['command']}` on {document['date']}: the "
            f"{document['clips']} English clips of `tests/data/speech/manifest.jsonl` "
            f"({audio_s:.0f} s of audio), model `{document['model']}`, "
            f"{document['workers']} workers of {document['threads']} thread(s) on both sides.",
            "",
            "| path | wall time | audio s per wall s | to a finished transcript, p50 / p95 | WER |",
            "|---|---|---|---|---|",
            f"| HTTP API, {document['clients']} clients posting one clip at a time | "
            f"{api['wall_s']:.1f} s | {audio_s / api['wall_s']:.1f} | {p50:.2f} s / {p95:.2f} s "
            f"| {api['wer']:.1%} |",
            f"| `appliance transcribe` on all clips, one process | {cli['wall_s']:.1f} s | "
            f"{audio_s / cli['wall_s']:.1f} | | {cli['wer']:.1%} |",
            "",
            f"- Machine: {m['cpu']}, {m['cores']} cores, load average "
            f"{', '.join(f'{x:.2f}' for x in m['load_average'])} at the start; "
            f"commit {m['commit']}.",
            "- The API's wall time runs from the first POST to the last finished transcript, "
            "with the daemon already up and its model loaded; `appliance transcribe`'s includes "
            "starting Python and loading the model. A client polls every "
            f"{_POLL_S * 1000:.0f} ms, so a latency can be that much late. The API decodes "
            "each clip as its own job (its own VAD pass, its windows on the shared workers); "
            "`appliance transcribe` runs as many files side by side as it has workers.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure both paths, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__)
    parser.add_argument("--output", type=Path, help="write the section into this Markdown file")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="clips (manifest.jsonl)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--model", default="tiny.en", help="model name (default tiny.en)")
    parser.add_argument("--quant", default="q8_0", help="its quant (default q8_0)")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    args = parser.parse_args(argv)
    clips = read_manifest(args.manifest, language="en")
    audio_s = sum(soundfile.info(str(c.audio)).duration for c in clips)
    machine = describe(_ROOT)  # before the run: its load average is the other work's
    _say(f"{len(clips)} clips, {audio_s:.0f} s; appliance transcribe ...")
    cli_s, cli_texts = transcribecli(clips, args)
    _say(f"appliance transcribe: {cli_s:.1f} s; the API with {args.clients} clients ...")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        api = transcribe_api(clips, args, Path(scratch))
    latencies = [t for t, _ in api["results"]]
    cuts = quantiles(latencies, n=100, method="inclusive")
    document = {
        "command": command_line("benchmarks.api", argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "model": f"{args.model}-{args.quant}",
        "workers": args.workers,
        "threads": args.threads,
        "clients": args.clients,
        "clips": len(clips),
        "audio_s": audio_s,
        "api": {
            "wall_s": api["wall_s"],
            "p50_s": cuts[49],
            "p95_s": cuts[94],
            "wer": _wer(clips, [text for _, text in api["results"]]),
        },
        "cli": {"wall_s": cli_s, "wer": _wer(clips, cli_texts)},
    }
    _say(json.dumps({k: v for k, v in document.items() if k != "machine"}))
    section = render(document)
    if args.output:
        report_sections.write(args.output, section)
        _say(f"wrote the {SECTION[3:]!r} section of {args.output}")
    else:
        sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
