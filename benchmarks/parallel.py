"""`python -m benchmarks.parallel`: workers x threads throughput, memory and busy threads, measured.

Every configuration runs in a fresh process (`python -m benchmarks.parallel SPEC RESULT`), so
its peak resident set (VmHWM) is its own and no configuration warms the next one's caches.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from appliance.errors import UsageError
from benchmarks import proc, report_sections
from benchmarks.parallel_report import BUSY, SAMPLE_S, SECTION, render

MANIFEST = Path("tests/data/speech/manifest.jsonl")


@dataclass(frozen=True)
class Config:
    """One measured configuration: workers, each with a whisper.cpp context, x threads each."""

    workers: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.workers}x{self.threads}"


CONFIGS = (Config(1, 1), Config(2, 1), Config(4, 1), Config(1, 2))
MODELS = ("tiny.en-q8_0", "base-q8_0")


# ---------------------------------------------------------------- the child process


def _cpu_ticks() -> dict[int, int]:
    """utime + stime of every thread of this process, in clock ticks."""
    ticks = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def _machine_ticks() -> int:
    """Busy clock ticks of the whole machine: every process, and time stolen by a hypervisor."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


class _ThreadSampler:
    """Samples every thread's CPU time while a run lasts (not its own), and the machine's."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._samples: list[tuple[float, dict[int, int]]] = []
        self._machine: list[int] = []
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._own = -1

    def _run(self) -> None:
        self._own = threading.get_native_id()
        while True:
            self._samples.append((time.perf_counter(), _cpu_ticks()))
            self._machine.append(_machine_ticks())
            if self._stop.wait(SAMPLE_S):
                self._samples.append((time.perf_counter(), _cpu_ticks()))
                self._machine.append(_machine_ticks())
                return

    def __enter__(self) -> _ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Threads busy at once (median and most of the samples), threads that worked, cores
        used by this process and by everything else on the machine meanwhile."""
        hz = os.sysconf("SC_CLK_TCK")
        at_once = []
        for (t0, before), (t1, after) in zip(self._samples, self._samples[1:], strict=False):
            share = {
                tid: (n - before.get(tid, 0)) / hz / (t1 - t0)
                for tid, n in after.items()
                if tid != self._own
            }
            at_once.append(sum(1 for s in share.values() if s >= BUSY))
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        used = {tid: (n - first.get(tid, 0)) / hz for tid, n in last.items() if tid != self._own}
        wall = end - start
        machine = (self._machine[-1] - self._machine[0]) / hz / wall
        return {
            "busy_median": median(at_once) if at_once else 0,
            "busy_max": max(at_once, default=0),
            "threads_working": sum(1 for s in used.values() if s >= BUSY * wall),
            "cores_used": sum(used.values()) / wall,
            # The sampler's own few milliseconds count here too: well under 0.01 cores.
            "others_cores": max(0.0, machine - sum(used.values()) / wall),
        }


def _overlap(spans: list[tuple[float, float]], wall_s: float) -> dict[str, float]:
    """How many decodes ran at once: the most, and the share of the run with two or more."""
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    running = most = 0
    two_or_more = 0.0
    previous = events[0][0] if events else 0.0
    for t, step in events:
        if running >= 2:
            two_or_more += t - previous
        running += step
        most = max(most, running)
        previous = t
    return {"max_concurrent": most, "share_two_or_more": two_or_more / wall_s if wall_s else 0.0}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration over the clips in this process and return what was measured."""
    from appliance.engine.transcriber import DecodeOptions, Timing, Transcriber
    from appliance.evaluate import read_manifest
    from appliance.recording.audio import SAMPLE_RATE, load
    from appliance.recording.segmenter import Segmenter

    config = Config(**spec["config"])
    sets = set(spec["sets"]) if spec.get("sets") else None
    clips = read_manifest(Path(spec["manifest"]), sets=sets, language="en")
    audio = [load(clip.audio) for clip in clips]
    speech = [Segmenter().segments(samples) for samples in audio]
    audio_s = sum(samples.size for samples in audio) / SAMPLE_RATE
    baseline_kib = proc.status_kib(
        "VmRSS"
    )  # interpreter, libraries and the clips, before the model

    decoded: list[Timing] = []
    started = time.perf_counter()
    transcriber = Transcriber(
        Path(spec["model"]),
        DecodeOptions(threads=config.threads, language="en"),
        workers=config.workers,
        on_decoded=decoded.append,
    )
    load_s = time.perf_counter() - started
    with transcriber:
        loaded_kib = proc.status_kib("VmRSS")
        # One window per worker at once, so every context has run before the clock starts.
        first = next(s for s in speech if s)
        warm = [transcriber.submit(first[0].samples) for _ in range(config.workers)]
        for future in warm:
            future.result()
        decoded.clear()
        with ThreadPoolExecutor(config.workers) as clips_side_by_side, _ThreadSampler() as cpu:
            started = time.perf_counter()
            # As `appliance transcribe --workers N` runs a batch: N clips at a time.
            results = list(clips_side_by_side.map(transcriber.transcribe, speech))
            wall_s = time.perf_counter() - started
    peak_kib = proc.status_kib("VmHWM")
    text = json.dumps([[[s.start_s, s.end_s, s.text] for s in r.segments] for r in results])
    latencies = sorted(d.finished - d.started for d in decoded)
    return {
        "config": asdict(config),
        "clips": len(clips),
        "audio_s": audio_s,
        "windows": len(decoded),
        "wall_s": wall_s,
        "throughput": audio_s / wall_s,
        "window_s_median": median(latencies),
        "window_s_p90": latencies[int(0.9 * (len(latencies) - 1))],
        "windows_per_worker": [
            sum(1 for d in decoded if d.worker == i) for i in range(config.workers)
        ],
        **_overlap([(d.started, d.finished) for d in decoded], wall_s),
        **cpu.summary(),
        "load_s": load_s,
        "baseline_mb": baseline_kib * 1024 / 1e6,
        "loaded_mb": loaded_kib * 1024 / 1e6,
        "peak_rss_mb": peak_kib * 1024 / 1e6,
        "engine_mb": (peak_kib - baseline_kib) * 1024 / 1e6,
        "output_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


# ---------------------------------------------------------------- the parent


def _machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    # The bundled libwhisper's file name carries whisper.cpp's version (libwhisper.so.1.8.5).
    whisper_cpp = next(
        (
            f.name.split(".so.", 1)[1]
            for f in importlib.metadata.files("pywhispercpp") or ()
            if f.name.startswith("libwhisper.so.") and f.name.count(".") == 4
        ),
        "unknown",
    )
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pywhispercpp": importlib.metadata.version("pywhispercpp"),
        "whisper.cpp": whisper_cpp,
        "commit": commit,
    }


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.parallel", json.dumps(spec), str(result)],
            stdout=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Config(**spec['config']).name} failed (exit {done.returncode})")
        return json.loads(result.read_text())


def parser() -> argparse.ArgumentParser:
    """`python -m benchmarks.parallel`'s options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parallel",
        description="workers x threads: throughput, memory, parallel or queued, threads busy",
    )
    parser.add_argument(
        "--model",
        action="append",
        help="installed model name, NAME-QUANT or a ggml file path; give it once per model "
        f"(default {' and '.join(MODELS)})",
    )
    parser.add_argument("--dir", help="models folder (default: as for `appliance models`)")
    parser.add_argument(
        "--manifest",
        default=str(MANIFEST),
        help=f"clips manifest; its English clips are decoded (default {MANIFEST})",
    )
    parser.add_argument(
        "--sets", help="comma-separated set names of the manifest to decode (default: all)"
    )
    parser.add_argument(
        "--output",
        metavar="FILE.md",
        help=f"replace or append the '{SECTION[3:]}' section of FILE.md (e.g. docs/benchmarks.md)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        choices=range(1, 10),
        metavar="N",
        help="run all configurations N times, report per model the round least "
        "disturbed by other processes (default 1)",
    )
    return parser


def _rounds(
    model: Path, manifest: Path, sets: list[str] | None, repeat: int
) -> list[list[dict[str, Any]]]:
    """Every configuration of one model, each in a fresh process, round after round."""
    rounds: list[list[dict[str, Any]]] = []
    for round_ in range(1, repeat + 1):
        rounds.append([])
        for config in CONFIGS:
            print(
                f"bench parallel: {model.name}: round {round_}/{repeat}: {config.name} ...",
                file=sys.stderr,
                flush=True,
            )
            spec = {
                "config": asdict(config),
                "model": str(model),
                "manifest": str(manifest),
                "sets": sets,
            }
            r = _run_child(spec)
            print(
                f"bench parallel: {model.name} {config.name}: {r['throughput']:.1f} audio s/s, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB, others {r['others_cores']:.2f} cores",
                file=sys.stderr,
                flush=True,
            )
            rounds[-1].append(r)
    return rounds


def run(args: argparse.Namespace) -> int:
    """Each configuration of each model in a fresh process, then the report."""
    from appliance import paths
    from appliance.models import catalog, store

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise UsageError(f"{manifest}: no such manifest (run from the checkout or pass --manifest)")
    directory = Path(args.dir) if args.dir else paths.models_dir()
    models = [store.resolve(m, directory, catalog.DEFAULT_QUANT) for m in args.model or MODELS]
    command = " ".join(["python -m benchmarks.parallel", *sys.argv[1:]])
    began = time.perf_counter()
    machine = _machine()
    runs = []
    for model in models:
        sets = args.sets.split(",") if args.sets else None
        rounds = _rounds(model, manifest, sets, args.repeat)
        # The quietest round (least CPU taken by other processes during its worst run) is
        # reported, so its configurations compare fairly.
        results = min(rounds, key=lambda runs: max(r["others_cores"] for r in runs))
        runs.append({"model": model.name, "results": results, "rounds": rounds})
    document = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "took_s": time.perf_counter() - began,
        "repeat": args.repeat,
        "machine": machine,
        "models": runs,
    }
    section = render(document)
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    if args.output:
        target = Path(args.output)
        report_sections.write(target, section)
        print(f"wrote the {SECTION[3:]!r} section of {target}", file=sys.stderr)
    else:
        sys.stdout.write(section)
    return 0


def main(argv: Sequence[str]) -> int:
    """The benchmark; or, as a child (SPEC-JSON RESULT-FILE), measure one configuration."""
    if len(argv) == 2 and argv[0].startswith("{"):
        Path(argv[1]).write_text(json.dumps(measure(json.loads(argv[0]))))
        return 0
    try:
        return run(parser().parse_args(argv))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
