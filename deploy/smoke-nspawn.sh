#!/bin/bash
# Try the installer and the hardened unit under a real systemd, on a machine where systemd is
# not PID 1 (a CI container, say): boot this host's Debian in a systemd-nspawn container (its
# /usr read-only, a copy of its /etc), run deploy/install.sh there as on a Pi, and have the
# service transcribe and deliver a meeting from a file. No microphone or GPIO is tried.
#
# Needs root and systemd-nspawn (apt-get install systemd-container); uses pip's cache and the
# network (for pip) of the host. Prints one "==>" line per step and exits non-zero on a fault.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAMPLE=/src/tests/data/speech/jfk/jfk.flac
step() { printf '==> %s\n' "$*"; }
die() { printf 'smoke-nspawn: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v systemd-nspawn >/dev/null || die "no systemd-nspawn (apt-get install systemd-container)"

root=$(mktemp -d /tmp/meeting-appliance-nspawn.XXXXXX)
log=$root.log
nspawn=""
cleanup() {
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        kill -TERM "$nspawn"  # nspawn shuts the container down in order
        for _ in $(seq 60); do kill -0 "$nspawn" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$root"
}
trap cleanup EXIT

step "container root $root: /usr from the host, a copy of /etc"
chmod 0755 "$root"  # it is the container's /: mktemp's 0700 would lock out every other user
mkdir -p "$root"/{usr,var/lib,var/log,var/tmp,opt,tmp,root/.cache/pip,home,srv,dev,proc,sys,run,src}
chmod 1777 "$root/tmp" "$root/var/tmp"
for link in bin lib lib64 sbin; do ln -s "usr/$link" "$root/$link"; done
cp -a /etc "$root/etc"
rm -f "$root/etc/machine-id" "$root/etc/os-release"
cp /usr/lib/os-release "$root/etc/os-release"
mkdir -p "${HOME:-/root}/.cache/pip"

step "booting it (log: $log)"
# The host's network is shared (pip needs it), so nothing in there may configure it.
setsid systemd-nspawn -q -D "$root" --bind-ro=/usr --bind-ro="$SRC:/src" \
    --bind="${HOME:-/root}/.cache/pip:/root/.cache/pip" --register=no --keep-unit \
    -M meeting-appliance-smoke -b -- systemd.mask=systemd-networkd.service \
    systemd.mask=systemd-networkd.socket systemd.mask=console-getty.service \
    > "$log" 2>&1 < /dev/null &
nspawn=$!
leader=""
for _ in $(seq 60); do
    leader=$(pgrep -P "$nspawn" -x systemd || true)
    [ -n "$leader" ] && break
    sleep 1
done
[ -n "$leader" ] || die "the container did not boot: $(tail -5 "$log")"
inside() { nsenter -t "$leader" -a -- env -i PATH=/usr/sbin:/usr/bin HOME=/root "$@"; }
state=""
for _ in $(seq 120); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case $state in running|degraded) break ;; esac
    sleep 1
done
case $state in running|degraded) ;; *) die "container state: $state" ;; esac

step "deploy/install.sh inside, as on a Pi (/usr is read-only: units and docs under /etc, /opt)"
inside APT=no PYTHON=/usr/bin/python3 UNITDIR=/etc/systemd/system SYSUSERSDIR=/etc/sysusers.d \
    TMPFILESDIR=/etc/tmpfiles.d UDEVRULESDIR=/etc/udev/rules.d \
    DOCDIR=/opt/meeting-appliance/doc bash -c 'cd /src && ./deploy/install.sh' \
    | grep -v '^WARNING: Location'

step "the service is up, ready and idle"
[ "$(inside systemctl is-active meeting-appliance)" = active ] \
    || die "not active: $(inside journalctl -u meeting-appliance --no-pager -n 20)"
inside systemctl show meeting-appliance -p StatusText | grep -qx 'StatusText=idle' \
    || die "$(inside systemctl show meeting-appliance -p StatusText)"
inside stat -c '%a %U:%G %n' /run/meeting-appliance /run/meeting-appliance/control.sock \
    /var/lib/meeting-appliance /etc/meeting-appliance/config.toml

step "a member of group meeting-appliance records a meeting from a file"
inside useradd -m -G meeting-appliance smoke-user
as_user() { inside su smoke-user -c "/opt/meeting-appliance/bin/appliance $*"; }
as_user start --from-file "$SAMPLE" --to smoke@example.com --title Smoke
as_user stop --wait
as_user status

step "the transcript was delivered to the Maildir"
inside bash -c 'grep -l "fellow Americans" /var/lib/meeting-appliance/maildir/new/*' \
    || die "no transcript in the Maildir: $(inside journalctl -u meeting-appliance --no-pager -n 20)"

step "systemctl stop: a clean exit, no restarts, no watchdog kills"
inside systemctl stop meeting-appliance
inside systemctl show meeting-appliance -p Result -p ExecMainStatus -p NRestarts \
    | sort | tr '\n' ' ' | grep -qx 'ExecMainStatus=0 NRestarts=0 Result=success ' \
    || die "$(inside systemctl show meeting-appliance -p Result -p ExecMainStatus -p NRestarts)"

step "ok"
