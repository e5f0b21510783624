"""benchmarks.parallel compares transcripts of configurations that decode alike."""

from benchmarks.parallel_report import outputs, render


def _run(workers: int, threads: int, digest: str) -> dict:
    return {"config": {"workers": workers, "threads": threads}, "output_sha256": digest * 16}


def test_outputs_are_compared_per_threads_a_window_gets() -> None:
    # A file of one window gets workers x threads: 1x2 and 2x1 decode those files alike but
    # a longer file's windows with 2 and 1 threads, so they are not compared.
    runs = [_run(1, 1, "a"), _run(2, 1, "b"), _run(4, 1, "c"), _run(1, 2, "d")]
    assert outputs(runs).startswith("no two configurations")
    assert outputs([_run(1, 1, "a"), _run(2, 1, "a")]).startswith("every configuration wrote")
    runs.append(_run(2, 1, "b"))  # a second run of 2 x 1 with the same transcript
    assert outputs(runs).startswith("every configuration that gives each window")
    runs[-1] = _run(2, 1, "e")  # ... and with another
    assert "**with the same threads per window" in outputs(runs)


def _measured(workers: int, threads: int, throughput: float, engine_mb: float) -> dict:
    return {
        **_run(workers, threads, "a"),
        "clips": 66,
        "audio_s": 369.0,
        "windows": 68,
        "throughput": throughput,
        "window_s_median": 10 / throughput,
        "window_s_p90": 15 / throughput,
        "max_concurrent": workers,
        "share_two_or_more": 0.9 if workers > 1 else 0.0,
        "busy_median": workers * threads,
        "busy_max": workers * threads,
        "cores_used": min(2, workers * threads),
        "others_cores": 0.0,
        "peak_rss_mb": engine_mb + 90,
        "engine_mb": engine_mb,
        "load_s": 0.2,
    }


def test_the_section_has_a_table_per_model_and_the_projection() -> None:
    results = [
        _measured(1, 1, 17.5, 110),
        _measured(2, 1, 32.5, 210),
        _measured(4, 1, 31.0, 410),
        _measured(1, 2, 28.3, 110),
    ]
    machine = {
        "cpu": "AMD EPYC",
        "cores": 2,
        "load_average": [0.5, 0.5, 0.5],
        "python": "3.11.7",
        "pywhispercpp": "1.5.1",
        "whisper.cpp": "1.8.5",
        "commit": "abc1234",
    }
    document = {
        "command": "python -m benchmarks.parallel",
        "date": "2026-12-02T02:00:00+00:00",
        "took_s": 300.0,
        "machine": machine,
        "models": [
            {"model": "ggml-tiny.en-q8_0.bin", "results": results},
            {"model": "ggml-base-q8_0.bin", "results": results},
        ],
    }
    text = render(document)
    assert text.startswith("## Parallel workers\n")
    assert text.count("| 2 x 1 | 32.5 | 1.86 |") == 2
    assert "a second one costs 100 MB" in text and "4 workers 410 MB" in text
    assert "| `ggml-base-q8_0.bin` | 4 x 1 |" in text and "not measured" in text
    assert "shared weights" not in text and "whisper_state" not in text
