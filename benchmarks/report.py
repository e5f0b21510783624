"""docs/benchmarks.md from the raw results: machine, method, the tables and the comparisons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import configs

Result = dict[str, Any]
# A 1-minute load average this high on the machine before the run means another process
# was already using a good part of a core.
_BUSY_LOAD = 0.5


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right_from: int = 1) -> list[str]:
    """A Markdown table; columns from right_from on are numbers, aligned right."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _corpus_wer(report: dict | None) -> float | None:
    return report["corpus"]["wer"] if report else None


def _meeting(result: Result, mode: str) -> dict | None:
    return next((m for m in result.get("meeting", ()) if m["mode"] == mode), None)


def _common(result: Result) -> list[str]:
    """File, load, memory and WER cells shared by both engines' tables."""
    rss = result.get("peak_rss_kib")
    return [
        result["model"],
        result["quant"],
        _num(result["file_bytes"] / 1e6 if "file_bytes" in result else None, 1),
        _num(result.get("load_s"), 2),
        _num(rss * 1024 / 1e6 if rss else None, 0),
        _pct(_corpus_wer(result.get("english"))),
        _pct(_corpus_wer(result.get("swedish"))),
    ]


def _meeting_cells(meeting: dict | None) -> list[str]:
    if meeting is None:
        return ["-", "-", "-"]
    return [_num(meeting["seconds"], 1), _num(meeting["rtf"], 3), _pct(meeting["wer"])]


_COMMON = ["model", "quant", "file MB", "load s", "peak RSS MB", "English WER %", "Swedish WER %"]


def _engine_rows(results: list[Result], engine: str) -> list[Result]:
    return [r for r in results if r["engine"] == engine and "error" not in r]


def _whisper_cpp(results: list[Result]) -> list[str]:
    rows = []
    for r in _engine_rows(results, configs.WHISPER_CPP):
        cells = _common(r) + _meeting_cells(_meeting(r, "transcribe_file"))
        if (r["model"], r["quant"]) == (configs.DEFAULT.model, configs.DEFAULT.quant):
            cells[1] += " (default)"
        rows.append(cells)
    header = [*_COMMON, "meeting s", "meeting RTF", "meeting WER %"]
    return _table(header, rows, right_from=2) if rows else ["(no whisper.cpp configuration ran)"]


def _faster_whisper(results: list[Result]) -> list[str]:
    rows = [
        _common(r)
        + _meeting_cells(_meeting(r, "whole file"))
        + _meeting_cells(_meeting(r, "vad_filter"))
        for r in _engine_rows(results, configs.FASTER_WHISPER)
    ]
    header = ["model", "compute type", *_COMMON[2:]]
    header += ["meeting s", "meeting RTF", "meeting WER %"]
    header += ["VAD meeting s", "VAD meeting RTF", "VAD meeting WER %"]
    return _table(header, rows, right_from=2) if rows else ["(no faster-whisper configuration ran)"]


def _find(results: list[Result], engine: str, model: str, quant: str) -> Result | None:
    return next(
        (
            r
            for r in results
            if (r["engine"], r["model"], r["quant"]) == (engine, model, quant) and "error" not in r
        ),
        None,
    )


def _comparisons(results: list[Result]) -> list[str]:
    """whisper.cpp's default quant against faster-whisper int8, per model: the English clips
    one file at a time, and the meeting against each peer mode."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in results):
        ours = _find(results, configs.WHISPER_CPP, model, configs.DEFAULT.quant)
        peer = _find(results, configs.FASTER_WHISPER, model, "int8")
        if ours and peer and ours.get("english") and peer.get("english"):
            mine, theirs = ours["english"]["corpus"], peer["english"]["corpus"]
            ratio = mine["processing_s"] / theirs["processing_s"]
            lines.append(
                f"- {model}: whisper.cpp {configs.DEFAULT.quant} time for the {mine['clips']} "
                f"English clips, one file at a time / faster-whisper int8 time = "
                f"{mine['processing_s']:.1f} s / {theirs['processing_s']:.1f} s = "
                f"**{ratio:.2f}** ({mine['errors']} against {theirs['errors']} word errors)"
            )
        ours_meeting = ours and _meeting(ours, "transcribe_file")
        for mode, how in (("whole file", "whole file, no VAD"), ("vad_filter", "vad_filter=True")):
            theirs = peer and _meeting(peer, mode)
            if not (ours_meeting and theirs):
                continue
            ratio = ours_meeting["seconds"] / theirs["seconds"]
            lines.append(
                f"- {model}: whisper.cpp {configs.DEFAULT.quant} meeting time / faster-whisper "
                f"int8 meeting time ({how}) = {ours_meeting['seconds']:.1f} s / "
                f"{theirs['seconds']:.1f} s = **{ratio:.2f}**"
            )
    return lines or ["(needs whisper.cpp at the default quant and faster-whisper int8)"]


def _per_set(results: list[Result]) -> list[str]:
    """English WER set by set: the default configuration against faster-whisper."""
    model = configs.DEFAULT.model
    quant = configs.DEFAULT.quant
    columns = [
        (f"whisper.cpp {model} {quant}", configs.WHISPER_CPP, quant),
        (f"faster-whisper {model} float32", configs.FASTER_WHISPER, "float32"),
        (f"faster-whisper {model} int8", configs.FASTER_WHISPER, "int8"),
    ]
    found = [(title, _find(results, engine, model, quant)) for title, engine, quant in columns]
    # int8 only stands in when float32 did not run (a --quick run).
    if found[1][1] is not None:
        found.pop()
    found = [(title, r) for title, r in found if r is not None]
    if not found:
        return [f"(needs {model} on either engine)"]
    first = found[0][1]["english"]
    rows = []
    for row in [*first["sets"], first["corpus"]]:
        cells = [row["dataset"], str(row["clips"]), str(row["ref_words"])]
        for _, result in found:
            sets = {s["dataset"]: s for s in result["english"]["sets"]}
            sets["total"] = result["english"]["corpus"]
            cells.append(_pct(sets[row["dataset"]]["wer"]) if row["dataset"] in sets else "-")
        rows.append(cells)
    header = ["set", "clips", "ref words", *(f"{title} WER %" for title, _ in found)]
    return _table(header, rows)


def _machine(document: dict[str, Any]) -> list[str]:
    m = document["machine"]
    features = ", ".join(m.get("cpu_features") or []) or "unknown"
    load = ", ".join(f"{v:.2f}" for v in m["load_average"])
    return [
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); "
        f"ggml built with {features}",
        f"- RAM: {_num(m['ram_gb'], 1)} GB; OS: {m['os']}, kernel {m['kernel']}, {m['machine']}",
        f"- Load average at start (1, 5, 15 min): {load}",
        f"- Python {m['python']}; pywhispercpp {m.get('pywhispercpp')} (whisper.cpp "
        f"{m.get('whisper.cpp')}, ggml {m.get('ggml')}); faster-whisper {m['faster-whisper']}, "
        f"ctranslate2 {m['ctranslate2']}",
        f"- Commit: {m['commit'] or 'unknown'}",
    ]


def _method(document: dict[str, Any]) -> list[str]:
    threads = document["threads"]
    sets = ", ".join(document["english_sets"])
    return [
        f"- {threads} threads for both engines (total); one configuration at a time, each in a fresh "
        "process. Peak RSS is that process's maximum resident set (its own VmHWM), load included. "
        "MB are 10^6 bytes.",
        "- whisper.cpp runs the product path as `appliance transcribe` does by default: "
        f"`Transcriber(path, DecodeOptions(threads=1), workers={threads})`, {threads} "
        "workers of one thread each, each with a whisper.cpp context of its own, built by "
        "`deploy/build-whisper.sh` for this CPU (load time includes the file's sha256 check "
        "against its install record: `verify_s` in the JSON), then "
        "`transcribe_file(audio, Segmenter(), language)` per clip and for the "
        "meeting: Silero VAD segments, levelled and packed into windows of up to 30 s, each "
        "encoded over all 1500 positions (`appliance/engine/windows.py`), greedy, no previous-text "
        "conditioning.",
        "- faster-whisper loads the same CTranslate2 weights the appliance converts, "
        f'`WhisperModel(dir, device="cpu", compute_type=..., cpu_threads={threads})`, decodes '
        "greedily (`beam_size=1, temperature=0.0, condition_on_previous_text=False`, language "
        "given) each clip's samples as the appliance decodes them, and the meeting file itself "
        "twice: as it does by default (whole file, no VAD) and with `vad_filter=True` (Silero). "
        "Meeting times include decoding the file and consuming the lazy segment generator.",
        f"- English WER: every clip of the English sets ({sets}) of "
        "`tests/data/speech/manifest.jsonl`, scored by `appliance.evaluate` (Whisper's "
        "normalizer, word-weighted over the corpus). Swedish WER: `commonvoice_sv`, multilingual "
        "models only.",
        f"- Meeting: `{configs.MEETING.relative_to(configs.ROOT)}` "
        f"({document['meeting_audio_s']:.0f} s), WER against its `.txt` after the same "
        "normalization; RTF is wall seconds per second of audio. Each engine transcribes the "
        f"meeting {configs.MEETING_RUNS} times after its clips; the table gives the median "
        "(every run is in the JSON as `runs_s`).",
    ]


def render(document: dict[str, Any]) -> str:
    """The whole Markdown page."""
    results = document["results"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{document['command']}` on {document['date']} "
        f"(the run took {document['elapsed_s'] / 60:.1f} min). Raw results: `benchmarks.json`.",
    ]
    busy = document["machine"]["load_average"][0]
    if busy >= _BUSY_LOAD:
        lines += [
            "",
            f"**Busy machine**: load average {busy:.2f} at start, so other processes shared the "
            "cores and the times are too high; run again on an idle machine.",
        ]
    if document["quick"]:
        lines += [
            "",
            "**Quick run**: a few configurations and sets, the meeting only for the default and "
            "faster-whisper; not the full picture.",
        ]
    lines += ["", "## Machine", "", *_machine(document)]
    lines += ["", "## Method", "", *_method(document)]
    lines += ["", "## whisper.cpp (the appliance)", "", *_whisper_cpp(results)]
    lines += [
        "",
        "## faster-whisper (same CTranslate2 weights)",
        "",
        *_faster_whisper(results),
    ]
    lines += ["", "## Time against faster-whisper", "", *_comparisons(results)]
    lines += ["", "## English WER per set", "", *_per_set(results)]
    failed = [r for r in results if "error" in r]
    if failed:
        lines += ["", "## Failed", ""]
        lines += [f"- {r['engine']} {r['model']} {r['quant']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"
