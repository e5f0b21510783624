#!/bin/bash
# Remove what deploy/install.sh installed: the service, the virtualenv, the sysusers, tmpfiles
# and udev files, the docs. The config (/etc/meeting-appliance) and the state
# (/var/lib/meeting-appliance: meetings, outbox, models) stay unless PURGE=1. The service user
# stays either way, as Debian does with system users (its UID may still own files).
#
#   DESTDIR=    the staging root install.sh was given
#   PREFIX=/opt/meeting-appliance
#   PURGE=0     1: also delete the config and the state
#   SYSTEMD=auto    yes|no: stop and disable the service; auto = yes unless DESTDIR is set
set -euo pipefail

PROG=uninstall
# shellcheck source=deploy/layout.sh
. "$(dirname "${BASH_SOURCE[0]}")/layout.sh"
PURGE=${PURGE:-0}

case $PREFIX in /?*) ;; *) die "PREFIX must be an absolute path below /, got '$PREFIX'" ;; esac
live=yes; [ -n "$DESTDIR" ] && live=no
[ "$live" = no ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo make uninstall), or set DESTDIR"
case $SYSTEMD in
    auto) SYSTEMD=$live ;;
    yes|no) ;;
    *) die "SYSTEMD: expected auto, yes or no, got '$SYSTEMD'" ;;
esac

if [ "$SYSTEMD" = yes ] && [ -d /run/systemd/system ]; then
    step "systemctl disable --now $SERVICE"
    systemctl disable --now "$SERVICE" 2>/dev/null || note "it was not enabled"
fi

step "removing the unit, sysusers, tmpfiles, udev rule and docs"
rm -f "$DESTDIR$UNITDIR/$SERVICE.service" "$DESTDIR$SYSUSERSDIR/$SERVICE.conf" \
    "$DESTDIR$TMPFILESDIR/$SERVICE.conf" "$DESTDIR$UDEVRULESDIR/60-$SERVICE-gpio.rules"
rm -rf "$DESTDIR$DOCDIR"

step "removing the virtualenv $DESTDIR$PREFIX"
rm -rf "$DESTDIR$PREFIX"

if [ "$PURGE" = 1 ]; then
    step "PURGE=1: removing $DESTDIR$CONFDIR and $DESTDIR$STATEDIR"
    rm -rf "$DESTDIR$CONFDIR" "$DESTDIR$STATEDIR" "$DESTDIR/run/$SERVICE"
else
    step "kept $DESTDIR$CONFDIR (config, SMTP password) and $DESTDIR$STATEDIR (meetings, models)"
    note "PURGE=1 removes them too"
fi

if [ "$SYSTEMD" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
step "done"
