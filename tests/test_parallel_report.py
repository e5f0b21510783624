"""benchmarks.parallel compares transcripts of configurations that decode alike."""

from benchmarks.parallel import _outputs


def _run(workers: int, threads: int, shared: bool, digest: str) -> dict:
    config = {"workers": workers, "threads": threads, "shared": shared}
    return {"config": config, "output_sha256": digest * 16}


def test_outputs_are_compared_per_threads_a_window_gets() -> None:
    # A file of one window gets workers x threads: 1x2 and 2x1 decode those files alike but
    # a longer file's windows with 2 and 1 threads, so they are not compared.
    runs = [
        _run(1, 1, True, "a"),
        _run(1, 2, True, "b"),
        _run(2, 1, True, "c"),
        _run(2, 1, False, "c"),
        _run(2, 2, True, "d"),
        _run(2, 2, False, "d"),
    ]
    assert _outputs(runs).startswith("every configuration that gives each window")
    runs[3] = _run(2, 1, False, "e")  # separate weights wrote another transcript
    assert "**with the same threads per window" in _outputs(runs)
