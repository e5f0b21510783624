"""The "Parallel workers" section of docs/benchmarks.md, from `python -m benchmarks.parallel`'s runs."""

from __future__ import annotations

from typing import Any

SECTION = "## Parallel workers"
SAMPLE_S = 0.5  # how often the busy threads are sampled
BUSY = 0.2  # a thread using this share of a core in a sample counts as busy
# Assumed, not measured: the share of this machine's per-core ggml speed that one Cortex-A72
# core of a Pi 4 (1.5-1.8 GHz, 128-bit NEON against 256-bit AVX2) reaches. Replace the
# projection by a run of this command on the Pi itself.
PI4_CORE_FACTOR = 0.2


def _name(config: dict) -> str:
    return f"{config['workers']} x {config['threads']}"


def _find(results: list[dict], workers: int, threads: int) -> dict | None:
    wanted = {"workers": workers, "threads": threads}
    return next((r for r in results if r["config"] == wanted), None)


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    return a[key] / b[key] if a and b and b[key] else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _window_threads(config: dict) -> tuple[int, int]:
    """The threads a window gets: a file of one window gets every worker's (the Transcriber
    gives them to it), a window of a longer file one worker's."""
    return config["workers"] * config["threads"], config["threads"]


def outputs(results: list[dict]) -> str:
    """Whether the configurations wrote the same transcripts, compared where they should."""
    by_threads: dict[tuple[int, int], list[str]] = {}
    for r in results:
        by_threads.setdefault(_window_threads(r["config"]), []).append(r["output_sha256"])
    digests = ", ".join(f"{_name(r['config'])} {r['output_sha256'][:12]}" for r in results)
    if len({r["output_sha256"] for r in results}) == 1:
        return f"every configuration wrote the same text and timestamps (sha256 over all clips: {digests})."
    if any(len(set(group)) > 1 for group in by_threads.values()):
        return (
            "**with the same threads per window, configurations wrote different text or "
            f"timestamps**: {digests}."
        )
    if all(len(group) == 1 for group in by_threads.values()):
        return (
            "no two configurations give every window the same threads (workers x threads for a "
            "file of one window, threads for a longer file's), so their transcripts are not "
            "compared (whisper.cpp's results can depend on its thread count, not on the "
            "workers) "
            f"(sha256 over all clips: {digests})."
        )
    return (
        "every configuration that gives each window the same threads (workers x threads for a "
        "file of one window, threads for a longer file's) wrote the same text and timestamps "
        f"(sha256 over all clips: {digests})."
    )


def _table(results: list[dict]) -> list[str]:
    one = _find(results, 1, 1)
    lines = [
        "| workers x threads | throughput (audio s / s) | vs 1x1 | window s (median, p90) "
        "| decodes at once (most; share of run with 2+) | threads busy at once (median, most) "
        "| cores used | others | peak RSS MB | engine MB | load s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {_name(r['config'])} | {r['throughput']:.1f} "
            f"| {_fmt(_ratio(r, one, 'throughput'))} "
            f"| {r['window_s_median']:.2f}, {r['window_s_p90']:.2f} "
            f"| {r['max_concurrent']}; {r['share_two_or_more']:.0%} "
            f"| {r['busy_median']:g}, {r['busy_max']} | {r['cores_used']:.2f} "
            f"| {r['others_cores']:.2f} | {r['peak_rss_mb']:.0f} | {r['engine_mb']:.0f} "
            f"| {r['load_s']:.2f} |"
        )
    return lines


def _answers(results: list[dict], cores: int) -> list[str]:
    one, two, four = _find(results, 1, 1), _find(results, 2, 1), _find(results, 4, 1)
    threads2 = _find(results, 1, 2)
    lines = []
    if one and two:
        lines.append(
            f"- **Parallel, not queued**: 2 workers x 1 thread reach "
            f"{_fmt(_ratio(two, one, 'throughput'))}x the throughput of 1 x 1, and two decodes "
            f"ran at once for {two['share_two_or_more']:.0%} of the run; a queue in front of "
            "one decoder would show 1.0x and never two at once."
        )
        line = (
            f"- **Memory**: each worker is a whole whisper.cpp context (weights, KV caches, "
            f"buffers): a second one costs {two['engine_mb'] - one['engine_mb']:.0f} MB, so 2 "
            f"workers use {_fmt(_ratio(two, one, 'engine_mb'))}x the engine memory of one and "
            f"{_fmt(_ratio(two, one, 'peak_rss_mb'))}x its peak RSS"
        )
        if four:
            line += (
                f"; 4 workers {four['engine_mb']:.0f} MB of engine, {four['peak_rss_mb']:.0f} MB "
                f"peak RSS, at {_fmt(_ratio(four, two, 'throughput'))}x the throughput of 2 "
                f"(this machine has {cores} cores, so 4 x 1 oversubscribes them)"
            )
        lines.append(line + ".")
    if one and threads2:
        lines.append(
            f"- **threads honoured**: at threads = 2 one worker keeps {threads2['busy_median']:g} "
            f"threads busy (median of the samples; 1 x 1: {one['busy_median']:g}) and uses "
            f"{threads2['cores_used']:.2f} cores; a window decodes "
            f"{_fmt(_ratio(one, threads2, 'window_s_median'))}x as fast as with 1 thread."
        )
    lines.append("- Output: " + outputs(results))
    return lines


def render(document: dict[str, Any]) -> str:
    """The "Parallel workers" section of docs/benchmarks.md."""
    m, runs = document["machine"], document["models"]
    first = runs[0]["results"][0]
    others = max(r["others_cores"] for run in runs for r in run["results"])
    repeat = document.get("repeat", 1)
    lines = [
        SECTION,
        "",
        f"Written by `{document['command']}` on {document['date']} (the run took "
        f"{document['took_s'] / 60:.1f} min); models "
        + ", ".join(f"`{run['model']}`" for run in runs)
        + f", the {first['clips']} English dev clips ({first['audio_s']:.0f} s of audio, "
        f"{first['windows']} windows), each configuration in a fresh process"
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
        "- Method: `Transcriber(model, DecodeOptions(threads=T, language='en'), workers=W)` "
        "decodes the clips as `appliance transcribe --workers W` does a batch: W clips at a time, "
        "their VAD windows queued for the W workers, each a thread with a whisper.cpp context "
        "of its own (pywhispercpp's objects: its own copy of the weights). Throughput is "
        "seconds of audio per wall second of the timed run (model loaded, every worker warmed "
        "by one window first). A window's time is its decode alone, queueing excluded. Threads "
        f"are sampled every {SAMPLE_S} s from /proc/self/task/*/stat: a thread using {BUSY:.0%} "
        "of a core in a sample is busy. *others*: cores the rest of the machine used meanwhile "
        "(/proc/stat less this process). Engine MB is the peak resident set (VmHWM) less the "
        "resident set before the model was loaded (interpreter, libraries, the clips).",
    ]
    for run in runs:
        lines += ["", f"### `{run['model']}`", "", *_table(run["results"]), ""]
        lines += _answers(run["results"], m["cores"])
    lines += _projection(runs)
    return "\n".join(lines) + "\n"


def _projection(runs: list[dict]) -> list[str]:
    """A Pi 4 estimate from this run's scaling; a projection, never a measurement."""
    rows = []
    for run in runs:
        results = run["results"]
        one, two, four = _find(results, 1, 1), _find(results, 2, 1), _find(results, 4, 1)
        deep = _find(results, 1, 2)
        if not (one and two and four and deep):
            continue
        core = one["throughput"] * PI4_CORE_FACTOR  # one Pi 4 core, one worker
        per_worker = two["throughput"] / one["throughput"] / 2  # efficiency of a doubling
        per_thread = deep["throughput"] / one["throughput"] / 2
        rows += [
            (run["model"], "1 x 4", core * 4 * per_thread**2, one["engine_mb"]),
            (run["model"], "2 x 2", core * 4 * per_worker * per_thread, two["engine_mb"]),
            (run["model"], "4 x 1", core * 4 * per_worker**2, four["engine_mb"]),
        ]
    if not rows:
        return []
    lines = [
        "",
        "### Projection for a Raspberry Pi 4 (4 cores) — not measured",
        "",
        f"**A projection, not a measurement**: this machine's 1 x 1 throughput times an "
        f"*assumed* {PI4_CORE_FACTOR} per-core speed of a Cortex-A72 against this CPU, "
        "times 4 cores, times the scaling efficiency measured here for each doubling of "
        "workers (2 x 1 against 1 x 1) or threads (1 x 2 against 1 x 1). The Pi's shared "
        "memory bandwidth may scale worse. Engine memory: as measured here for as many workers "
        "(each a context with its own weights and buffers, about the same size on ARM). "
        "Replace with `python -m benchmarks.parallel` run on the Pi.",
        "",
        "| model | workers x threads | projected throughput (audio s / s) "
        "| engine MB (measured here) |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| `{model}` | {name} | {t:.1f} | {mb:.0f} |" for model, name, t, mb in rows]
    return lines
