"""The package's shape: stages import only upstream, modules stay small, no hand-laid C structs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "appliance"
MAX_LINES = 400
# A ctypes Structure's field list as a name of its own (not __dataclass_fields__); spelled in
# two halves so this file does not hold what it looks for.
_CTYPES_LAYOUT = re.compile(r"(?<!\w)" + "_fields" + r"_(?!\w)")
_NOT_OURS = {".git", ".venv", "build", "node_modules", "__pycache__"}


def _imports(source: str, package: tuple[str, ...]) -> set[str]:
    """Every module a module of `package` imports, by absolute name (`from a import b` gives
    a and a.b, since b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, one level up per extra dot
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _ours(pattern: str) -> list[Path]:
    """The repository's files, without installed packages, caches and the models folder."""
    found = []
    for path in sorted(ROOT.rglob(pattern)):
        parts = path.relative_to(ROOT).parts
        if not _NOT_OURS.intersection(parts) and parts[0] != "models":
            found.append(path)
    return found


_UPSTREAM = sorted((PACKAGE / "recording").rglob("*.py")) + [
    PACKAGE / name for name in ("config.py", "config_values.py", "transcript.py")
]


@pytest.mark.parametrize("path", _UPSTREAM, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_config_transcript_and_recording_never_import_the_engine(path: Path) -> None:
    package = path.relative_to(ROOT).parent.parts
    engine = _engine(_imports(path.read_text(encoding="utf-8"), package))
    assert engine == [], f"{path.relative_to(ROOT)} imports {engine}"


def _engine(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "appliance.engine" or n.startswith("appliance.engine."))


@pytest.mark.parametrize(
    "line",
    [
        "import appliance.engine.transcriber",
        "from appliance.engine.windows import WINDOW_S",
        "from appliance import engine",
        "from ..engine import windows",
        "from .. import engine",
        "def f():\n    from appliance.engine import transcriber",
    ],
)
def test_the_engine_check_sees_every_form_of_import(line: str) -> None:
    assert _engine(_imports(line, ("appliance", "recording")))
    assert not _engine(_imports(line.replace("engine", "recording"), ("appliance", "recording")))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.name))
def test_no_module_of_the_package_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines"


def test_no_struct_layout_is_copied_by_hand() -> None:
    files = _ours("*.py")
    assert len(files) > 50  # the scan found the repository
    assert any(p.parts[-2:] == ("models", "ggml.py") for p in files)
    copied = [
        str(p.relative_to(ROOT))
        for p in files
        if _CTYPES_LAYOUT.search(p.read_text(encoding="utf-8"))
    ]
    assert copied == []
    assert _CTYPES_LAYOUT.search("    " + "_fields" + "_ = [")
    assert not _CTYPES_LAYOUT.search("self.__dataclass_fields__")


@pytest.mark.parametrize("path", sorted((PACKAGE / "delivery").rglob("*.py")), ids=lambda p: p.name)
def test_delivery_imports_no_later_or_parallel_stage(path: Path) -> None:
    package = path.relative_to(ROOT).parent.parts
    names = _imports(path.read_text(encoding="utf-8"), package)
    stages = ("appliance.recording", "appliance.engine", "appliance.service")
    found = sorted(n for n in names if n.startswith(stages))
    assert found == [], f"{path.relative_to(ROOT)} imports {found}"
