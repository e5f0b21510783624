"""The systemd unit, sysusers and tmpfiles files, the installer and the generated docs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from appliance import config
from appliance.models import store
from tools import reference

CHECKOUT = Path(__file__).resolve().parents[1]
UNIT = CHECKOUT / "systemd" / "meeting-appliance.service"
SYSUSERS = CHECKOUT / "systemd" / "meeting-appliance.sysusers"
TMPFILES = CHECKOUT / "systemd" / "meeting-appliance.tmpfiles"
PREFIX = "/opt/meeting-appliance"
MAX_EXPOSURE = 2.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


# --- the installer, run once for the module -------------------------------------------------


class Staged:
    """A staging install (DESTDIR) and what running the installer printed."""

    def __init__(
        self,
        root: Path,
        first: subprocess.CompletedProcess,
        again: subprocess.CompletedProcess,
        seconds: float,
    ) -> None:
        self.root, self.first, self.again, self.seconds = root, first, again, seconds

    def __truediv__(self, path: str) -> Path:
        return self.root / path.lstrip("/")


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """`make install DESTDIR=...` once (a venv from pip's cache, tiny.en q5_1), then the
    installer again over it with an edited config, as an upgrade would."""
    root = tmp_path_factory.mktemp("destdir")
    started = time.monotonic()
    first = _run("make", "--no-print-directory", "install", f"DESTDIR={root}", cwd=CHECKOUT)
    seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    config_file = root / "etc/meeting-appliance/config.toml"
    config_file.write_text('[room]\nname = "Edited by the admin"\n')
    again = _run(
        str(CHECKOUT / "deploy/install.sh"),
        cwd="/",
        env={**os.environ, "DESTDIR": str(root), "MODEL": "", "EXTRAS": ""},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    return Staged(root, first, again, seconds)


def test_install_prints_a_line_per_step(staged):
    steps = [line for line in staged.first.stdout.splitlines() if line.startswith("==> ")]
    assert steps[0].startswith("==> apt packages: skipped")  # DESTDIR set: no apt
    assert any(s.startswith("==> model tiny.en (q5_1) into ") for s in steps)
    assert steps[-1] == "==> done"
    # Staging creates no user and starts nothing.
    assert not [s for s in steps if s.startswith(("==> service user", "==> systemctl"))]
    print(f"staging install took {staged.seconds:.0f} s")


def test_staged_tree_files_and_modes(staged):
    expected = {
        "/lib/systemd/system/meeting-appliance.service": 0o644,
        "/usr/lib/sysusers.d/meeting-appliance.conf": 0o644,
        "/usr/lib/tmpfiles.d/meeting-appliance.conf": 0o644,
        "/lib/udev/rules.d/60-meeting-appliance-gpio.rules": 0o644,
        "/usr/share/doc/meeting-appliance/configuration.md": 0o644,
        "/usr/share/doc/meeting-appliance/config.example.toml": 0o644,
        "/etc/meeting-appliance": 0o755,
        "/etc/meeting-appliance/config.toml": 0o640,
        "/etc/meeting-appliance/smtp-password": 0o600,
        "/var/lib/meeting-appliance": 0o700,
        "/var/lib/meeting-appliance/models": 0o755,
    }
    assert {path: _mode(staged / path) for path in expected} == expected
    assert (staged / "/etc/meeting-appliance/smtp-password").stat().st_size == 0
    assert (
        staged / "/lib/systemd/system/meeting-appliance.service"
    ).read_text() == UNIT.read_text()
    assert (
        staged / "/usr/lib/sysusers.d/meeting-appliance.conf"
    ).read_text() == SYSUSERS.read_text()
    if os.geteuid() == 0:  # staging: root's, since the service user exists only on the target
        assert (staged / "/etc/meeting-appliance/config.toml").stat().st_uid == 0


def test_staged_model_verifies(staged):
    models = staged / "/var/lib/meeting-appliance/models"
    assert [p.name for p in store.installed(models)] == ["ggml-tiny.en-q5_1.bin"]
    found = store.verify(models / "ggml-tiny.en-q5_1.bin")
    assert found.hparams.quant.name == "q5_1"


def test_staged_venv_is_relocated_to_prefix(staged):
    venv = staged / PREFIX
    assert (venv / "bin/appliance").read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    leftovers = _run("grep", "-rlIF", str(staged.root), str(venv / "bin"), str(venv / "pyvenv.cfg"))
    assert leftovers.stdout == ""
    # Not editable: the package and the email templates live in the venv, not the checkout.
    probe = _run(
        str(venv / "bin/python"),
        "-c",
        "import appliance, appliance.paths as p; print(appliance.__file__); "
        "print(p.builtin_templates()); print(sorted(p.name for p in p.builtin_templates().iterdir()))",
        cwd="/",
    )
    assert probe.returncode == 0, probe.stderr
    module, templates, names = probe.stdout.splitlines()
    assert module.startswith(str(venv / "lib")) and templates.startswith(str(venv / "share"))
    assert names == "['body.html.j2', 'body.txt.j2', 'subject.txt.j2', 'web']"
    web = Path(templates) / "web"
    assert (web / "login.html.j2").is_file() and (web / "static" / "now.js").is_file()
    version = _run(str(venv / "bin/python"), "-m", "appliance", "--version", cwd="/")
    assert version.stdout.startswith("appliance ")


def test_the_fresh_config_is_the_commented_example(staged):
    # Checked on the first run's copy in the docs folder; the live one was edited since.
    installed = staged / "/usr/share/doc/meeting-appliance/config.example.toml"
    assert installed.read_text() == reference.example_config()
    assert "wrote config.toml" in staged.first.stdout


def test_an_existing_config_is_never_overwritten(staged):
    config_file = staged / "/etc/meeting-appliance/config.toml"
    assert config_file.read_text() == '[room]\nname = "Edited by the admin"\n'
    assert "keeping the existing config.toml" in staged.again.stdout
    assert "==> model: skipped (MODEL is empty)" in staged.again.stdout


def test_unit_verifies_against_the_staged_install(staged, tmp_path):
    """`systemd-analyze verify` needs ExecStart's binary: point the unit at the staged one."""
    unit = tmp_path / "meeting-appliance.service"
    unit.write_text(
        UNIT.read_text().replace(f"ExecStart={PREFIX}/", f"ExecStart={staged.root}{PREFIX}/")
    )
    result = _run("systemd-analyze", "verify", str(unit))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# --- the unit on its own --------------------------------------------------------------------


def test_unit_verify_finds_nothing_but_the_missing_binary():
    """Without an install only ExecStart may be reported (so a typo is caught even in CI)."""
    result = _run("systemd-analyze", "verify", str(UNIT))
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    if Path(PREFIX, "bin/appliance").exists():
        assert complaints == []
    else:
        assert complaints == [
            f"meeting-appliance.service: Command {PREFIX}/bin/appliance is not "
            "executable: No such file or directory"
        ]


def test_unit_exposure_is_low():
    result = _run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT))
    found = re.search(
        r"Overall exposure level for meeting-appliance\.service: (\d+\.\d+)", result.stdout
    )
    assert found, result.stdout + result.stderr
    print(f"exposure {found.group(1)}")
    assert float(found.group(1)) <= MAX_EXPOSURE


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_settings_the_daemon_relies_on():
    unit = _unit_settings()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == [f"{PREFIX}/bin/appliance run"]
    assert unit["StateDirectory"] == ["meeting-appliance"]
    assert unit["StateDirectoryMode"] == ["0700"]
    assert unit["RuntimeDirectoryMode"] == ["0750"]
    assert unit["WorkingDirectory"] == [config.StorageConfig().state_dir]
    assert Path(config.ControlConfig().socket).parent == Path("/run") / unit["RuntimeDirectory"][0]
    assert unit["LoadCredential"] == ["smtp-password:/etc/meeting-appliance/smtp-password"]
    assert "PrivateDevices" not in unit  # it would hide /dev/snd and /dev/gpiochip*
    assert unit["DevicePolicy"] == ["closed"]
    # The daemon finishes a backlog for 90 s on SIGTERM; systemd must wait longer.
    assert int(unit["TimeoutStopSec"][0]) > 90


def test_sysusers_and_tmpfiles_make_the_user_and_folders(tmp_path):
    (tmp_path / "etc").mkdir()
    with open(SYSUSERS) as source:
        made = _run("systemd-sysusers", f"--root={tmp_path}", "-", stdin=source)
    assert made.returncode == 0, made.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    user = users["meeting-appliance"]
    assert user[5] == "/var/lib/meeting-appliance"
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",")
        for line in (tmp_path / "etc/group").read_text().splitlines()
    }
    assert "meeting-appliance" in groups["audio"] and "meeting-appliance" in groups["gpio"]
    with open(TMPFILES) as source:
        made = _run("systemd-tmpfiles", f"--root={tmp_path}", "--create", "-", stdin=source)
    assert made.returncode == 0, made.stderr
    for path, mode in [
        ("var/lib/meeting-appliance", 0o700),
        ("run/meeting-appliance", 0o750),
        ("var/lib/meeting-appliance/models", 0o755),
    ]:
        info = (tmp_path / path).stat()
        assert (_mode(tmp_path / path), info.st_uid, info.st_gid) == (
            mode,
            int(user[2]),
            int(user[3]),
        )


# --- uninstall, on a tree of the installed paths (no venv needed) ----------------------------

INSTALLED = [
    "lib/systemd/system/meeting-appliance.service",
    "usr/lib/sysusers.d/meeting-appliance.conf",
    "usr/lib/tmpfiles.d/meeting-appliance.conf",
    "lib/udev/rules.d/60-meeting-appliance-gpio.rules",
    "usr/share/doc/meeting-appliance/configuration.md",
    "opt/meeting-appliance/bin/python",
]
KEPT = [
    "etc/meeting-appliance/config.toml",
    "etc/meeting-appliance/smtp-password",
    "var/lib/meeting-appliance/appliance.db",
    "var/lib/meeting-appliance/models/ggml-tiny.en-q5_1.bin",
]


@pytest.mark.parametrize("purge", [False, True])
def test_uninstall_keeps_config_and_state_unless_purged(tmp_path, purge):
    for path in INSTALLED + KEPT:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    env = {**os.environ, "DESTDIR": str(tmp_path), "PURGE": "1" if purge else "0"}
    result = _run("make", "--no-print-directory", "uninstall", cwd=CHECKOUT, env=env)
    assert result.returncode == 0, result.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ([] if purge else sorted(KEPT))
    assert not (tmp_path / "opt/meeting-appliance").exists()


# --- the generated reference and example config ---------------------------------------------


def test_committed_docs_match_the_generator():
    """Regenerate with: python -m tools.reference --markdown docs/configuration.md
    --example deploy/config.example.toml"""
    assert (CHECKOUT / reference.MARKDOWN).read_text() == reference.markdown()
    assert (CHECKOUT / reference.EXAMPLE).read_text() == reference.example_config()
    assert (
        reference.main(
            [
                "--check",
                "--markdown",
                str(CHECKOUT / reference.MARKDOWN),
                "--example",
                str(CHECKOUT / reference.EXAMPLE),
            ]
        )
        == 0
    )


def test_the_example_config_is_the_defaults_commented_or_not():
    text = reference.example_config()
    assert config.parse(tomllib.loads(text)) == config.Config()
    uncommented = re.sub(r"^#(?=[a-z_]+ = )", "", text, flags=re.MULTILINE)
    assert uncommented != text
    assert config.parse(tomllib.loads(uncommented)) == config.Config()
    keys = {(s, k) for s, k, *_ in config.describe()}
    shown = set()
    section = ""
    for line in uncommented.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif re.match(r"^[a-z_]+ = ", line):
            shown.add((section, line.split(" = ")[0]))
    assert shown == keys


def test_the_reference_names_every_key_with_default_and_example():
    text = reference.markdown()
    for _section, key, default, _doc, _rules in config.describe():
        row = f"| `{key}` | {reference.type_name(default)} | `{reference.toml_value(default)}` |"
        assert row in text
        assert f"\n{key} = " in text
    for kind in {rules.get("kind") for *_, rules in config.describe()} - {None}:
        assert kind in reference._KINDS, f"describe {kind!r} in tools/reference.py"


def test_every_example_value_is_a_real_key_and_valid():
    keys = {(s, k) for s, k, *_ in config.describe()}
    assert set(reference.EXAMPLES) <= keys
    for (section, key), value in reference.EXAMPLES.items():
        config.parse({section: {key: value}}, "example")
