"""docs/benchmarks.md: each benchmark command rewrites its own sections and keeps the others."""

from benchmarks import report_sections

PAGE = "# Benchmarks\n\nintro\n\n## Machine\n\nx86\n\n## Parallel workers\n\nold table\n\n## Daemon\n\nold daemon\n"


def test_replace_swaps_only_the_section_of_the_same_heading():
    out = report_sections.replace(PAGE, "## Parallel workers\n\nnew table\n")
    assert "new table" in out and "old table" not in out
    assert out.index("## Machine") < out.index("## Parallel workers") < out.index("## Daemon")
    assert "old daemon" in out and out.startswith("# Benchmarks\n\nintro\n")


def test_replace_appends_a_new_heading():
    out = report_sections.replace(PAGE, "## Daemon: a one-hour meeting\n\nfresh\n")
    assert out.endswith("## Daemon: a one-hour meeting\n\nfresh\n")
    assert "old daemon" in out


def test_replace_into_an_empty_page_keeps_a_title():
    assert report_sections.replace("# Benchmarks\n", "## A\n\nb\n") == "# Benchmarks\n\n## A\n\nb\n"


def test_keep_others_keeps_what_the_new_page_does_not_write():
    page = "# Benchmarks\n\nnew intro\n\n## Machine\n\narm\n"
    out = report_sections.keep_others(PAGE, page)
    assert out.startswith(page)
    assert "x86" not in out and "intro\n" in out
    assert "old table" in out and "old daemon" in out
    assert out.count("## Machine") == 1


def test_keep_others_of_no_previous_file_is_the_page():
    assert report_sections.keep_others("", "# B\n\n## A\n\nb\n") == "# B\n\n## A\n\nb\n"


def test_write_creates_the_file_then_keeps_the_other_sections(tmp_path):
    target = tmp_path / "benchmarks.md"
    report_sections.write(target, "## A\n\nfirst\n")
    report_sections.write(target, "## B\n\nother\n")
    report_sections.write(target, "## A\n\nsecond\n")
    assert target.read_text() == "# Benchmarks\n\n## A\n\nsecond\n\n## B\n\nother\n"
