"""`appliance check-config`: one line per problem, naming the file, the key and what is allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_server import certificate  # noqa: F401 (a fixture, used by name)

from appliance.models import silero, speakers, store
from appliance.service import checks

CHECKOUT = Path(__file__).resolve().parents[1]
MODELS = CHECKOUT / "models"
TINY = store.model_path(MODELS, "tiny.en", "q5_1")


@pytest.fixture
def write(tmp_path):
    """Write a config whose state folder and models folder are good, plus the given TOML."""

    def write(text: str = "", models: Path = MODELS) -> Path:
        path = tmp_path / "etc" / "config.toml"
        path.parent.mkdir(exist_ok=True)
        base = f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
        if "[storage]" in text:
            base = ""
        if "[transcriber]" not in text:
            base += f'[transcriber]\nmodels_dir = "{models}"\n'
        path.write_text(base + text)
        return path

    return write


def _only(problems: list[str], path: Path, key: str) -> str:
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{path}: {key}: ") and "(allowed: " in line
    assert len(line.splitlines()) == 1
    return line


@pytest.fixture(scope="module", autouse=True)
def _model_present():
    if not TINY.is_file():
        pytest.fail(f"{TINY} is missing: run `make model` (tiny.en q5_1 is the default model)")


def test_a_good_config_has_no_problems(write):
    assert checks.check_config(write()) == []


def test_a_missing_file_is_the_defaults_and_no_problem(tmp_path):
    # The defaults name /var/lib/meeting-appliance, which this machine may not allow; what
    # matters is that no line is about the missing file itself.
    path = tmp_path / "absent.toml"
    problems = checks.check_config(path)
    assert all(p.startswith(f"{path}: storage.state_dir: ") for p in problems), problems


def test_a_config_error_is_the_only_line(write):
    path = write("[smtp]\nport = 0\n")
    assert checks.check_config(path) == [f"{path}: smtp.port: 0 is out of range (1 to 65535)"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('model = "small"\n', "model 'small' is not installed in"),
        ('model = "/nonexistent/ggml-x.bin"\n', "model '/nonexistent/ggml-x.bin' is not installed"),
    ],
)
def test_a_model_that_is_not_there(write, tmp_path, text, expected):
    empty = tmp_path / "models"
    empty.mkdir()
    path = write(f'[transcriber]\nmodels_dir = "{empty}"\n' + text)
    problems = checks.check_config(path)
    line = _only([p for p in problems if ": transcriber.model: " in p], path, "transcriber.model")
    assert expected in line
    assert f"allowed: a model installed in {empty} (none yet)" in line


def test_a_models_folder_without_the_vads_weights(write, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(TINY, folder)
    shutil.copy(TINY.with_suffix(".json"), folder)
    speakers.install(folder, speakers.path(MODELS))
    path = write(f'[transcriber]\nmodels_dir = "{folder}"\nmodel = "tiny.en"\n')
    line = _only(checks.check_config(path), path, "vad")
    assert "appliance models install silero-vad" in line


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_speaker_weights_missing_or_damaged(write, tmp_path, damage):
    folder = tmp_path / "models"
    folder.mkdir()
    for model in (TINY, TINY.with_suffix(".json"), silero.path(MODELS)):
        shutil.copy(model, folder)
    if damage == "truncated":
        speakers.install(folder, speakers.path(MODELS))
        with open(speakers.path(folder), "r+b") as weights:
            weights.truncate(1000)
    path = write(f'[transcriber]\nmodels_dir = "{folder}"\nmodel = "tiny.en"\n')
    line = _only(checks.check_config(path), path, "speakers")
    assert str(speakers.path(folder)) in line
    assert "appliance models install speakers" in line
    # Turned off, the weights are not wanted.
    assert (
        checks.check_config(
            write(
                f'[transcriber]\nmodels_dir = "{folder}"\nmodel = "tiny.en"\n'
                "[speakers]\nenabled = false\n"
            )
        )
        == []
    )


def test_vad_padding_longer_than_the_pause_that_ends_a_segment(write):
    path = write("[vad]\npad_ms = 1500\nmin_silence_ms = 1000\n")
    line = _only(checks.check_config(path), path, "vad.pad_ms")
    assert "vad.min_silence_ms (1000)" in line


def test_a_damaged_model_is_named(write, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    copy = models / TINY.name
    shutil.copyfile(TINY, copy)
    shutil.copyfile(store.sidecar_path(TINY), store.sidecar_path(copy))
    shutil.copyfile(silero.path(MODELS), silero.path(models))
    speakers.install(models, speakers.path(MODELS))
    with open(copy, "r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"\xff" * 16)
    path = write(f'[transcriber]\nmodels_dir = "{models}"\n')
    line = _only(checks.check_config(path), path, "transcriber.model")
    assert "sha256 differs from the install record" in line
    assert "(tiny.en-q5_1)" in line


def test_an_unknown_quant(write):
    path = write(f'[transcriber]\nmodels_dir = "{MODELS}"\nmodel = "{TINY}"\nquant = "q9"\n')
    line = _only(checks.check_config(path), path, "transcriber.quant")
    assert "'q9' is not a quant (allowed: one of f16, q8_0, q5_1" in line


@pytest.mark.parametrize(
    "device, expected",
    [
        ("no such microphone", "no input device named 'no such microphone'"),
        ("99", "no input device with index 99"),
    ],
)
def test_an_audio_device_that_is_not_there_is_a_warning(write, device, expected):
    path = write(f'[audio]\ndevice = "{device}"\n')
    found = checks.review(path)
    assert found.problems == []  # a microphone unplugged at boot must not stop the daemon
    line = _only(found.warnings, path, "audio.device")
    assert expected in line and "allowed: a capture device index or part of its name" in line


def _check_with_alsa_device(tmp_path: Path, config: Path) -> list[str]:
    """check_config in a child whose ALSA has one capture device (a null PCM named in
    ~/.asoundrc): PortAudio reads the device list once per process."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        "pcm.appliance_test_mic {\n    type null\n"
        '    hint { show on description "Appliance test microphone" }\n}\n'
    )
    code = (
        "import sys; from appliance.service import checks\n"
        "found = checks.review(sys.argv[1])\n"
        "for line in found.problems + found.warnings: print(line)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        check=True,
        cwd=CHECKOUT,
        env={**os.environ, "HOME": str(home)},
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize("device", ["test_mic", "0"])
def test_an_audio_device_that_is_there(write, tmp_path, device):
    assert _check_with_alsa_device(tmp_path, write(f'[audio]\ndevice = "{device}"\n')) == []


def test_the_devices_there_are_listed(write, tmp_path):
    path = write('[audio]\ndevice = "USB"\n')
    line = _only(_check_with_alsa_device(tmp_path, path), path, "audio.device")
    assert line.endswith(
        "(allowed: a capture device index or part of its name: 0 'appliance_test_mic')"
    )


@pytest.fixture
def secret(tmp_path):
    def secret(name: str, text: str = "hunter2\n", mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    return secret


def test_password_file_ok_forms(write, secret, tmp_path):
    absolute = secret("private/pw")
    assert (
        checks.check_config(write(f'[smtp]\nusername = "u"\npassword_file = "{absolute}"\n')) == []
    )
    # A credential name: beside the config (what the unit's LoadCredential= copies) ...
    path = write('[smtp]\nusername = "u"\npassword_file = "smtp-password"\n')
    secret("etc/smtp-password")
    assert checks.check_config(path, environ={}) == []
    # ... or inside the service, in $CREDENTIALS_DIRECTORY.
    (tmp_path / "etc" / "smtp-password").unlink()
    secret("creds/smtp-password", mode=0o400)
    assert (
        checks.check_config(path, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}) == []
    )


@pytest.mark.parametrize(
    "smtp, files, expected",
    [
        ('username = "u"\n', {}, "empty, but smtp.username is set"),
        (
            'password_file = "smtp-password"\n',
            {},
            "no credential 'smtp-password': no {etc}/smtp-password",
        ),
        ('password_file = "secrets/pw"\n', {}, "'secrets/pw' is a relative path"),
        (
            'password_file = "{tmp}/pw"\n',
            {"pw": 0o644},
            "{tmp}/pw is world-readable (mode 0644): chmod o-r",
        ),
        ('password_file = "{tmp}/pw"\n', {}, "{tmp}/pw: No such file or directory"),
        ('password_file = "{tmp}"\n', {}, "{tmp} is not a regular file"),
        (
            'username = "u"\npassword_file = "{tmp}/pw"\n',
            {"pw": 0o600, "empty": True},
            "{tmp}/pw is empty, but smtp.username is set",
        ),
    ],
)
def test_password_file_problems(write, secret, tmp_path, smtp, files, expected):
    for name, mode in files.items():
        if name != "empty":
            secret(name, "" if files.get("empty") else "hunter2\n", mode)
    path = write("[smtp]\n" + smtp.format(tmp=tmp_path))
    line = _only(checks.check_config(path, environ={}), path, "smtp.password_file")
    assert expected.format(tmp=tmp_path, etc=path.parent) in line
    assert (
        "allowed: an absolute path of a file no other user can read, or a systemd "
        "credential name" in line
    )


def test_state_dir_problems(write, tmp_path):
    (tmp_path / "a-file").write_text("")
    path = write(f'[storage]\nstate_dir = "{tmp_path / "a-file" / "state"}"\n')
    line = _only(checks.check_config(path), path, "storage.state_dir")
    assert f"{tmp_path / 'a-file'} is not a folder" in line
    path = write('[storage]\nstate_dir = "var/state"\n')
    assert "'var/state' is a relative path" in _only(
        checks.check_config(path), path, "storage.state_dir"
    )
    path = write(f'[storage]\nstate_dir = "{tmp_path / "new" / "deeper"}"\n')
    assert checks.check_config(path) == []  # creatable


def test_a_read_only_state_dir(write, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.fail("cannot mount a read-only tmpfs here (the test needs root)")
    try:
        path = write(f'[storage]\nstate_dir = "{mount}"\n')
        line = _only(checks.check_config(path), path, "storage.state_dir")
        assert f"{mount} is not writable by uid {os.getuid()}" in line
        path = write(f'[storage]\nstate_dir = "{mount / "state"}"\n')
        line = _only(checks.check_config(path), path, "storage.state_dir")
        assert f"{mount / 'state'} cannot be created in {mount}" in line
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize(
    "calendar, ok",
    [
        ("http://calendar.lan/room.ics", True),
        ("https://calendar.lan/room.ics", True),
        ("{tmp}/room.ics", True),
        ("webcal://calendar.lan/room.ics", False),
        ("{tmp}/absent.ics", False),
    ],
)
def test_calendar(write, tmp_path, calendar, ok):
    (tmp_path / "room.ics").write_text("BEGIN:VCALENDAR\nEND:VCALENDAR\n")
    path = write(f'[room]\ncalendar = "{calendar.format(tmp=tmp_path)}"\n')
    problems = checks.check_config(path)
    if ok:
        assert problems == []
    else:
        line = _only(problems, path, "room.calendar")
        assert "allowed: an iCalendar file path, an http:// or https:// URL, or empty" in line


def test_more_checks_can_be_hooked_in_and_a_broken_one_is_a_line(write):
    def check_templates(ctx: checks.Context) -> list[str]:
        return [ctx.problem("templates", "body.txt.j2: unexpected '}'", "jinja2 templates")]

    def check_broken(ctx: checks.Context) -> list[str]:
        raise RuntimeError("boom")

    path = write()
    assert checks.check_config(path, checks=[*checks.CHECKS, check_templates, check_broken]) == [
        f"{path}: templates: body.txt.j2: unexpected '}}' (allowed: jinja2 templates)",
        f"{path}: check_broken failed: RuntimeError: boom",
    ]


@pytest.mark.parametrize("language", ["sv", "auto", "de"])
def test_a_language_the_english_only_model_cannot_do(write, language):
    path = write(f'[room]\nlanguage = "{language}"\n')
    line = _only(checks.check_config(path), path, "room.language")
    assert f"'{language}': {TINY.name} is English-only" in line
    assert f'(allowed: "en" with {TINY.name})' in line


def test_a_language_whisper_does_not_know_is_a_config_error(write):
    path = write('[room]\nlanguage = "xx"\n')
    assert checks.check_config(path) == [
        f'{path}: room.language: \'xx\' is not a language code like "en" or "auto"'
    ]


def _appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
        timeout=300,
    )


def test_check_config_says_what_it_read_and_checked(write):
    path = write()
    result = _appliance("check-config", "--config", str(path))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout
    assert lines[0] == f"config: {path}"
    assert lines[1].startswith("checked: ") and "room.language" in lines[1]
    assert lines[-1] == "ok"


def test_a_misspelt_config_path_is_refused_not_the_defaults(tmp_path):
    path = tmp_path / "confg.toml"
    checked = _appliance("check-config", "--config", str(path))
    assert checked.returncode == 1 and f"{path}: no such file" in checked.stdout
    run = _appliance("run", "--config", str(path))
    assert run.returncode == 1 and run.stderr.strip() == f"{path}: no such file"


@pytest.mark.parametrize(
    "text",
    [
        '[room]\nlanguage = "sv"\n',
        f'[transcriber]\nmodels_dir = "{MODELS}"\nmodel = "{TINY}"\nquant = "q9"\n',
        '[smtp]\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "/nonexistent/secret"\n',
        '[room]\ncalendar = "/nonexistent/room.ics"\n',
        '[storage]\nstate_dir = "relative/state"\n',
    ],
)
def test_run_refuses_what_check_config_refuses_with_the_same_lines(write, text):
    path = write(text)
    checked = _appliance("check-config", "--config", str(path))
    problems = [line for line in checked.stdout.splitlines() if line.startswith(f"{path}: ")]
    assert checked.returncode == 1 and problems
    run = _appliance("run", "--config", str(path))
    assert run.returncode == 1
    assert run.stderr.splitlines() == problems


@pytest.mark.parametrize(
    ("web", "key", "text"),
    [
        ('listen = "0.0.0.0:80"', "web.listen", "port 80 needs root"),
        ('listen = "0.0.0.0:8080"\ncertificate = "c.pem"', "web.key", "is empty"),
        ('certificate = "/none.pem"\nkey = "/none.key"', "web.certificate", "cannot load"),
    ],
)
def test_web_problems(write, web, key, text):
    path = write(f"[web]\n{web}\n")
    assert text in _only(checks.check_config(path), path, key)


def test_a_web_certificate_that_loads(write, certificate):
    path = write(
        f'[web]\nlisten = "0.0.0.0:8443"\n'
        f'certificate = "{certificate.cert}"\nkey = "{certificate.key}"\n'
    )
    assert checks.check_config(path) == []
