# Where the service lives: sourced by install.sh and uninstall.sh, so what one puts down the
# other finds. PROG names the script in error lines.
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/meeting-appliance}
SYSTEMD=${SYSTEMD:-auto}

# Fixed by the unit (StateDirectory=, ConfigurationDirectory=, LoadCredential=).
SERVICE=meeting-appliance
CONFDIR=/etc/meeting-appliance
STATEDIR=/var/lib/meeting-appliance
UNITDIR=${UNITDIR:-/lib/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
UDEVRULESDIR=${UDEVRULESDIR:-/lib/udev/rules.d}
DOCDIR=${DOCDIR:-/usr/share/doc/meeting-appliance}

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
