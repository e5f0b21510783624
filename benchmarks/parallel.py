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
from benchmarks import report_sections

SECTION = "## Parallel workers"
MANIFEST = Path("tests/data/speech/manifest.jsonl")
_SAMPLE_S = 0.5  # how often the busy threads are sampled
_BUSY = 0.2  # a thread using this share of a core in a sample counts as busy
# Assumed, not measured: the share of this machine's per-core ggml speed that one Cortex-A72
# core of a Pi 4 (1.5-1.8 GHz, 128-bit NEON against 256-bit AVX2) reaches. Replace the
# projection by a run of this command on the Pi itself.
PI4_CORE_FACTOR = 0.2


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    workers: int
    threads: int
    shared: bool  # one model with a state per worker, or a model per worker

    @property
    def name(self) -> str:
        return f"{self.workers}x{self.threads} {'shared' if self.shared else 'separate'}"


CONFIGS = (
    Config(1, 1, True),
    Config(1, 2, True),
    Config(2, 1, True),
    Config(2, 2, True),
    Config(2, 1, False),
    Config(2, 2, False),
)


# ---------------------------------------------------------------- the child process


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


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
            if self._stop.wait(_SAMPLE_S):
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
            at_once.append(sum(1 for s in share.values() if s >= _BUSY))
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        used = {tid: (n - first.get(tid, 0)) / hz for tid, n in last.items() if tid != self._own}
        wall = end - start
        machine = (self._machine[-1] - self._machine[0]) / hz / wall
        return {
            "busy_median": median(at_once) if at_once else 0,
            "busy_max": max(at_once, default=0),
            "threads_working": sum(1 for s in used.values() if s >= _BUSY * wall),
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
    from appliance.engine.transcriber import DecodeOptions
    from appliance.engine.workers import Decoded, TranscriberPool
    from appliance.evaluate import read_manifest
    from appliance.recording.audio import SAMPLE_RATE, load
    from appliance.recording.segmenter import Segmenter

    config = Config(**spec["config"])
    clips = read_manifest(Path(spec["manifest"]), language="en")
    audio = [load(clip.audio) for clip in clips]
    speech = [Segmenter().segments(samples) for samples in audio]
    audio_s = sum(samples.size for samples in audio) / SAMPLE_RATE
    baseline_kib = _status_kib("VmRSS")  # interpreter, libraries and the clips, before the model

    decoded: list[Decoded] = []
    started = time.perf_counter()
    pool = TranscriberPool(
        Path(spec["model"]),
        DecodeOptions(threads=config.threads),
        workers=config.workers,
        shared_weights=config.shared,
        on_decoded=decoded.append,
    )
    load_s = time.perf_counter() - started
    with pool:
        loaded_kib = _status_kib("VmRSS")
        # One window per worker at once, so every state has run before the clock starts.
        first = next(s for s in speech if s)
        warm = [pool.submit(first[0].samples) for _ in range(config.workers)]
        for future in warm:
            future.result()
        decoded.clear()
        with ThreadPoolExecutor(config.workers) as clips_side_by_side, _ThreadSampler() as cpu:
            started = time.perf_counter()
            # As `appliance transcribe --workers N` runs a batch: N clips at a time.
            results = list(clips_side_by_side.map(lambda s: pool.transcribe(s, "en"), speech))
            wall_s = time.perf_counter() - started
        workers = [w.state for w in pool.worker_info()]
    peak_kib = _status_kib("VmHWM")
    text = json.dumps([[[s.start_s, s.end_s, s.text] for s in r] for r in results])
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
        "states": sum(1 for s in workers if s),
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
    from appliance.engine.workers import BindingError, bindings

    try:
        whisper_cpp = bindings().version
    except BindingError:
        whisper_cpp = "unknown"
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


def _find(results: list[dict], workers: int, threads: int, shared: bool = True) -> dict | None:
    wanted = asdict(Config(workers, threads, shared))
    return next((r for r in results if r["config"] == wanted), None)


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    return a[key] / b[key] if a and b and b[key] else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _window_threads(config: dict) -> tuple[int, int]:
    """The threads a window gets: a file of one window gets every worker's (TranscriberPool),
    a window of a longer file one worker's."""
    return config["workers"] * config["threads"], config["threads"]


def _outputs(results: list[dict]) -> str:
    """Whether the configurations wrote the same transcripts, compared where they should."""
    by_threads: dict[tuple[int, int], set[str]] = {}
    for r in results:
        by_threads.setdefault(_window_threads(r["config"]), set()).add(r["output_sha256"])
    if any(len(digests) > 1 for digests in by_threads.values()):
        return (
            "**with the same threads per window, configurations wrote different text or "
            "timestamps**: "
            + ", ".join(f"{Config(**r['config']).name} {r['output_sha256'][:12]}" for r in results)
        )
    text = (
        "every configuration that gives each window the same threads (workers x threads "
        "for a file of one window, threads for a longer file's) wrote the same text and "
        "timestamps (one sha256 over all clips), whatever the weights, shared or separate"
    )
    if len({d for digests in by_threads.values() for d in digests}) > 1:
        text += (
            "; other thread counts differ from each other, as one Transcriber's do: "
            "whisper.cpp's results depend on its thread count, not on the workers"
        )
    return text + "."


def render(document: dict[str, Any]) -> str:
    """The "Parallel workers" section of docs/benchmarks.md."""
    m, results = document["machine"], document["results"]
    one, two = _find(results, 1, 1), _find(results, 2, 1)
    separate = _find(results, 2, 1, shared=False)
    threads2 = _find(results, 1, 2)
    speedup = _ratio(two, one, "throughput")
    memory = _ratio(two, one, "engine_mb")
    others = max(r["others_cores"] for r in results)
    repeat = document.get("repeat", 1)
    lines = [
        SECTION,
        "",
        f"Written by `{document['command']}` on {document['date']} (the run took "
        f"{document['took_s'] / 60:.1f} min); model `{document['model']}`, the "
        f"{results[0]['clips']} English dev clips ({results[0]['audio_s']:.0f} s of audio, "
        f"{results[0]['windows']} windows), each configuration in a fresh process"
        + (f", the quietest of {repeat} rounds." if repeat > 1 else "."),
        "",
    ]
    if others > 0.1:
        lines += [
            f"**Busy machine**: other processes used up to {others:.2f} of the "
            f"{m['cores']} cores during a timed run (the *others* column), so those "
            "throughputs and speed-ups are understated and noisy. Run again on an idle "
            "machine.",
            "",
        ]
    lines += [
        f"- Machine: {m['cpu']}, {m['cores']} cores; load average "
        f"{', '.join(map(str, m['load_average']))} at the start; Python {m['python']}, "
        f"pywhispercpp {m['pywhispercpp']} (whisper.cpp {m['whisper.cpp']}); commit {m['commit']}.",
        "- Method: `TranscriberPool(model, DecodeOptions(threads=T), workers=W)` decodes the "
        "clips as `appliance transcribe --workers W` does a batch: W clips at a time, their "
        "VAD windows queued for the W workers. *shared*: one model, a whisper_state per worker; "
        "*separate*: a model per worker. Throughput is seconds of audio per wall second of the "
        "timed run (model loaded, every worker warmed by one window first). A window's time is "
        "its decode alone, queueing excluded. Threads are sampled every "
        f"{_SAMPLE_S} s from /proc/self/task/*/stat: a thread using {_BUSY:.0%} of a core in a "
        "sample is busy. *others*: cores the rest of the machine used meanwhile (/proc/stat "
        "less this process). Engine MB is the peak resident set (VmHWM) less the resident set "
        "before the model was loaded (interpreter, libraries, the clips).",
        "",
        "| workers x threads | weights | throughput (audio s / s) | vs 1x1 | window s (median, p90) "
        "| decodes at once (most; share of run with 2+) | threads busy at once (median, most) "
        "| cores used | others | peak RSS MB | engine MB | load s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        c = r["config"]
        lines.append(
            f"| {c['workers']} x {c['threads']} | {'shared' if c['shared'] else 'separate'} "
            f"| {r['throughput']:.1f} | {_fmt(_ratio(r, one, 'throughput'))} "
            f"| {r['window_s_median']:.2f}, {r['window_s_p90']:.2f} "
            f"| {r['max_concurrent']}; {r['share_two_or_more']:.0%} "
            f"| {r['busy_median']:g}, {r['busy_max']} | {r['cores_used']:.2f} "
            f"| {r['others_cores']:.2f} | {r['peak_rss_mb']:.0f} | {r['engine_mb']:.0f} "
            f"| {r['load_s']:.2f} |"
        )
    lines += ["", "Answers:", ""]
    if speedup is not None:
        lines.append(
            f"- **Parallel, not queued**: 2 workers x 1 thread reach {speedup:.2f}x the throughput "
            f"of 1 x 1 (target 1.7x on 2 cores), and two decodes ran at once for "
            f"{two['share_two_or_more']:.0%} of the run; a queue in front of one decoder would "
            "show 1.0x and never two at once."
        )
    if memory is not None:
        line = (
            f"- **One model with N workers vs N models**: a second worker's state costs "
            f"{two['engine_mb'] - one['engine_mb']:.0f} MB, so 2 workers on shared weights "
            f"use {memory:.2f}x the engine memory of one and {_ratio(two, one, 'peak_rss_mb'):.2f}x "
            "its peak RSS (target 1.3x)"
        )
        if separate:
            line += (
                f"; 2 separate models use {_ratio(separate, one, 'engine_mb'):.2f}x and "
                f"{_ratio(separate, one, 'peak_rss_mb'):.2f}x, at "
                f"{_fmt(_ratio(separate, two, 'throughput'))}x the shared pool's throughput "
                f"(median window {separate['window_s_median']:.2f} s against "
                f"{two['window_s_median']:.2f} s)"
            )
        lines.append(line + ".")
    if threads2 is not None:
        lines.append(
            f"- **threads honoured**: at threads = 2 one worker keeps {threads2['busy_median']:g} "
            f"threads busy (median of the samples; 1 x 1: {one['busy_median']:g}) and uses "
            f"{threads2['cores_used']:.2f} cores; a window decodes "
            f"{_fmt(_ratio(one, threads2, 'window_s_median'))}x as fast as with 1 thread. "
            "workers x threads beyond the cores (2 x 2 here) oversubscribes them."
        )
    lines.append("- Output: " + _outputs(results))
    lines += _projection(results)
    return "\n".join(lines) + "\n"


def _projection(results: list[dict]) -> list[str]:
    """A Pi 4 estimate from this run's scaling; a projection, never a measurement."""
    one, two, deep = _find(results, 1, 1), _find(results, 2, 1), _find(results, 1, 2)
    if not (one and two and deep):
        return []
    core = one["throughput"] * PI4_CORE_FACTOR  # one Pi 4 core, one worker
    per_worker = two["throughput"] / one["throughput"] / 2  # efficiency of a doubling
    per_thread = deep["throughput"] / one["throughput"] / 2
    state_mb = two["engine_mb"] - one["engine_mb"]
    rows = [
        ("1 x 4", core * 4 * per_thread**2, one["engine_mb"]),
        ("2 x 2", core * 4 * per_worker * per_thread, one["engine_mb"] + state_mb),
        ("4 x 1", core * 4 * per_worker**2, one["engine_mb"] + 3 * state_mb),
    ]
    lines = [
        "",
        "### Projection for a Raspberry Pi 4 (4 cores) — not measured",
        "",
        f"**A projection, not a measurement**: this machine's 1 x 1 throughput times an "
        f"*assumed* {PI4_CORE_FACTOR} per-core speed of a Cortex-A72 against this CPU, "
        f"times 4 cores, times the scaling efficiency measured here for each doubling of "
        f"workers ({per_worker:.2f}) or threads ({per_thread:.2f}). The Pi's shared memory "
        "bandwidth may scale worse. Engine memory: this run's model plus one measured state "
        "per worker (the buffers are the same size on ARM). Replace with "
        "`python -m benchmarks.parallel` run on the Pi.",
        "",
        "| workers x threads | projected throughput (audio s / s) | projected engine MB |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {t:.1f} | {mb:.0f} |" for name, t, mb in rows]
    return lines


def parser() -> argparse.ArgumentParser:
    """`python -m benchmarks.parallel`'s options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parallel",
        description="workers x threads: throughput, memory, parallel or queued, threads busy",
    )
    parser.add_argument(
        "--model",
        default="tiny.en",
        help="installed model name, NAME-QUANT or a ggml file path (default tiny.en)",
    )
    parser.add_argument("--dir", help="models folder (default: as for `appliance models`)")
    parser.add_argument(
        "--manifest",
        default=str(MANIFEST),
        help=f"clips manifest; its English clips are decoded (default {MANIFEST})",
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
        help="run all configurations N times, report the round least "
        "disturbed by other processes (default 1)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Each configuration in a fresh process, then the report."""
    from appliance import paths
    from appliance.models import catalog, store

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise UsageError(f"{manifest}: no such manifest (run from the checkout or pass --manifest)")
    directory = Path(args.dir) if args.dir else paths.models_dir()
    model = store.resolve(args.model, directory, catalog.DEFAULT_QUANT)
    command = " ".join(["python -m benchmarks.parallel", *sys.argv[1:]])
    began = time.perf_counter()
    machine = _machine()
    rounds: list[list[dict[str, Any]]] = []
    # Whole rounds, one after the other: the quietest round (least CPU taken by other
    # processes during its worst run) is reported, so its configurations compare fairly.
    for round_ in range(1, args.repeat + 1):
        rounds.append([])
        for config in CONFIGS:
            print(
                f"bench parallel: round {round_}/{args.repeat}: {config.name} ...",
                file=sys.stderr,
                flush=True,
            )
            spec = {"config": asdict(config), "model": str(model), "manifest": str(manifest)}
            r = _run_child(spec)
            print(
                f"bench parallel: {config.name}: {r['throughput']:.1f} audio s/s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB, others {r['others_cores']:.2f} cores",
                file=sys.stderr,
                flush=True,
            )
            rounds[-1].append(r)
    results = min(rounds, key=lambda runs: max(r["others_cores"] for r in runs))
    document = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "took_s": time.perf_counter() - began,
        "model": model.name,
        "repeat": args.repeat,
        "machine": machine,
        "results": results,
        "rounds": rounds,
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
