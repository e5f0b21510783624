#!/bin/bash
# Prove the Raspberry Pi path without a Pi: an arm64 Debian 12 root file system run under
# qemu-user with the CPU model of a Pi 4 (Cortex-A72, ARMv8.0-A: NEON, no dot product, no fp16
# arithmetic), so the real aarch64 binaries run and any instruction the Pi lacks stops them
# with SIGILL. In it, as an admin on a fresh Pi: `make install`, then `appliance models
# verify`, `appliance transcribe` of jfk and of a dev clip, and the daemon recording a meeting
# from a file to an email in its Maildir. Slow (emulation): not part of `make test`;
# docs/pi.md has the results and what still needs a real Pi.
set -euo pipefail

usage() {
    cat <<EOF
usage: deploy/pi-emulated.sh [--fresh] [--native-compiler] [-h]

Builds (or reuses) an arm64 Debian 12 root file system in \$PI_CACHE, copies it to a fresh
"Pi" beside it, and runs the steps there under qemu-aarch64 -cpu cortex-a72. One line per
step with its time; the steps' output goes to \$PI_CACHE/logs/. Exits non-zero on the first
failed step and prints the end of its log. Needs root, Debian's qemu-user-static,
binfmt-support and debootstrap (installed if missing), and the package registries.

  --fresh        forget every cache first (root file system, .debs, pip's cache, the
                 pywhispercpp wheel): the run from nothing
  --native-compiler
                 compile with the Pi's own gcc, itself emulated (far slower), instead of
                 Debian's gcc 12.2 cross compiler for arm64 running at host speed inside
                 the Pi (same compiler version, same flags, same sources)
  -h, --help     this text

  PI_CACHE=/var/cache/meeting-appliance-pi   caches, the Pi's root and the logs
  DEBIAN_MIRROR=http://deb.debian.org/debian  where debootstrap and apt fetch from
  PI_CPU=cortex-a72                            qemu's CPU model
EOF
}

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PI_CACHE:-/var/cache/meeting-appliance-pi}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CPU=${PI_CPU:-cortex-a72}
SUITE=bookworm
FRESH=no
COMPILER=cross
while [ $# -gt 0 ]; do
    case $1 in
        --fresh) FRESH=yes ;;
        --native-compiler) COMPILER=native ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

die() { printf 'pi-emulated: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and binfmt_misc need it)"

BASE=$CACHE/base        # debootstrap's output, kept between runs
PI=$CACHE/pi            # this run's Pi: a fresh copy of BASE
LOGS=$CACHE/logs
JFK=/src/tests/data/speech/jfk/jfk.flac
# A dev clip and its reference (tests/data/speech/manifest.jsonl).
CLIP=/src/tests/data/speech/librivox_sense_sensibility/sense_and_sensibility_01_austen_64kb-0870.flac
APPLIANCE=/opt/meeting-appliance/bin/appliance
# Every command in the Pi runs with this environment and nothing else. QEMU_CPU is read by
# qemu-aarch64 (started by binfmt_misc for each aarch64 program), so every process, pip's
# compilers and the daemon's threads included, runs on the Cortex-A72 model.
PI_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        LANG=C.UTF-8 TERM=dumb QEMU_CPU="$CPU" PYWHISPERCPP_WHEELS=/var/cache/pywhispercpp-wheels
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1)
# Debian's cross compiler (the host's /usr, read-only at /host/usr in the Pi) is gcc 12.2.0 as
# on the Pi, and runs natively: pip, cmake and the rest of the build stay emulated, so the build
# takes the path it takes on a Pi. Only the compiler and assembler run at host speed.
if [ "$COMPILER" = cross ]; then
    PI_ENV+=(CC=/host/usr/bin/aarch64-linux-gnu-gcc-12 CXX=/host/usr/bin/aarch64-linux-gnu-g++-12)
fi

# Run a command in the Pi (as root, in /).
pi() { chroot "$PI" /usr/bin/env -i "${PI_ENV[@]}" "$@"; }

# step NAME COMMAND...: run it with its output in logs/NN-name.log, one line with its time.
STEP=0
TIMES=()
step() {
    local name=$1 log start end seconds status
    shift
    STEP=$((STEP + 1))
    log=$LOGS/$(printf '%02d' "$STEP")-$(printf '%s' "$name" | tr -c 'a-zA-Z0-9.\n' '-' | cut -c1-40).log
    printf '==> %s ... ' "$name"
    start=$(date +%s.%N)
    # A subshell outside any `if`, so that set -e stops the step at its first failing command.
    set +e
    (set -e; "$@") > "$log" 2>&1
    status=$?
    set -e
    end=$(date +%s.%N)
    seconds=$(echo "$end - $start" | bc)
    if [ "$status" -ne 0 ]; then
        printf 'FAILED after %.1f s (%s)\n' "$seconds" "$log"
        tail -n 25 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
    TIMES+=("$(printf '%8.1f s  %s' "$seconds" "$name")")
    printf '%.1f s\n' "$seconds"
}

DAEMON_PID=$CACHE/daemon.pid        # appliance run's (chroot's) process id, while it runs
DAEMON_STATUS=$CACHE/daemon.status  # its exit status, once it has exited
unmount_pi() {
    local m
    # Deepest first; lazily, so a process that outlived the run cannot keep them.
    awk -v root="$PI" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/self/mounts \
        | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
    if [ -s "$DAEMON_PID" ] && [ ! -e "$DAEMON_STATUS" ]; then
        kill -KILL "$(cat "$DAEMON_PID")" 2>/dev/null || true
    fi
    unmount_pi
}
trap cleanup EXIT

host_tools() {
    local missing=() p
    local packages=(qemu-user-static binfmt-support debootstrap bc binutils-aarch64-linux-gnu)
    [ "$COMPILER" = native ] || packages+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)
    for p in "${packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    # F: the kernel opens qemu now, so it runs aarch64 programs inside the chroot too.
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
    grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64
    local cpus
    cpus=$(qemu-aarch64-static -cpu help || true)  # exits 1 after the list
    grep -qw -- "$CPU" <<< "$cpus"
    qemu-aarch64-static --version | sed -n 1p
}

base_rootfs() {
    # minbase plus what a fresh Raspberry Pi OS Lite has and `make install` assumes: systemd
    # (sysusers, tmpfiles), udev, make; ca-certificates for pip.
    rm -rf "$BASE.tmp"
    debootstrap --arch=arm64 --variant=minbase \
        --include=systemd-sysv,udev,make,ca-certificates "$SUITE" "$BASE.tmp" "$MIRROR"
    mv "$BASE.tmp" "$BASE"
}

fresh_pi() {
    unmount_pi
    # rm -rf through a bind mount that is still there would delete the host's /dev.
    if awk -v root="$PI" 'index($2, root "/") == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
        echo "still mounted under $PI"
        return 1
    fi
    rm -rf "$PI"
    cp -a "$BASE" "$PI"
    mkdir -p "$CACHE/apt" "$CACHE/pip" "$CACHE/wheels" "$PI/src" "$PI/var/cache/pywhispercpp-wheels"
    cp /etc/resolv.conf "$PI/etc/resolv.conf"
    # This machine reaches the registries through a proxy with its own CA: the Pi trusts it too.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$PI/usr/local/share/ca-certificates/"
    fi
    # dpkg's fsyncs cost minutes here and protect against power loss, which a copy thrown
    # away after the run does not need (as in Debian's container images).
    echo force-unsafe-io > "$PI/etc/dpkg/dpkg.cfg.d/pi-emulated-unsafe-io"
    # No service starts in a chroot (Debian's policy-rc.d convention).
    printf '#!/bin/sh\nexit 101\n' > "$PI/usr/sbin/policy-rc.d"
    chmod 0755 "$PI/usr/sbin/policy-rc.d"
    mount -t proc proc "$PI/proc"
    # qemu-user (7.2, Debian 12's) shows aarch64 programs the host's x86 /proc/cpuinfo, and
    # onnxruntime's CPU probe (cpuinfo) crashes on it once /sys is there too: a real Pi has a
    # Pi's. So the Pi gets a Pi 4's (four Cortex-A72 cores, part 0xd08, ARMv8.0 features).
    for core in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$core"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
        printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done > "$CACHE/pi4-cpuinfo"
    printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n' >> "$CACHE/pi4-cpuinfo"
    mount --bind -o ro "$CACHE/pi4-cpuinfo" "$PI/proc/cpuinfo"
    mount -t sysfs sysfs "$PI/sys"
    mount --bind /dev "$PI/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$PI/dev/pts"
    mount -t tmpfs -o mode=0755 tmpfs "$PI/run"
    mount -t tmpfs -o mode=1777 tmpfs "$PI/tmp"
    mount --bind -o ro "$SRC" "$PI/src"
    mount --bind "$CACHE/apt" "$PI/var/cache/apt/archives"
    mkdir -p "$PI/root/.cache/pip"
    mount --bind "$CACHE/pip" "$PI/root/.cache/pip"
    mount --bind "$CACHE/wheels" "$PI/var/cache/pywhispercpp-wheels"
    if [ "$COMPILER" = cross ]; then
        # The x86-64 compiler finds its loader and libraries where it looks for them; nothing
        # aarch64 looks there.
        mkdir -p "$PI/host/usr" "$PI/usr/lib64"
        mount --bind -o ro /usr "$PI/host/usr"
        ln -s /host/usr/lib/x86_64-linux-gnu "$PI/usr/lib/x86_64-linux-gnu"
        ln -s /host/usr/lib64/ld-linux-x86-64.so.2 "$PI/usr/lib64/ld-linux-x86-64.so.2"
        [ -e "$PI/lib64" ] || ln -s usr/lib64 "$PI/lib64"
        # Its libc.so and libm.so are linker scripts naming /usr/aarch64-linux-gnu/lib/....
        ln -s /host/usr/aarch64-linux-gnu "$PI/usr/aarch64-linux-gnu"
    fi
    pi update-ca-certificates
}

# AT_HWCAP bits (Linux arch/arm64/include/uapi/asm/hwcap.h): 1 asimd, 9 fphp, 10 asimdhp,
# 20 asimddp. LD_SHOW_AUXV makes the Pi's own dynamic loader print what qemu hands it.
hwcap() { chroot "$PI" /usr/bin/env -i "$@" LD_SHOW_AUXV=1 /bin/true | awk '$1 == "AT_HWCAP:" {print $2}'; }
cpu_model() {
    local a72 max
    a72=0x$(hwcap QEMU_CPU="$CPU")  # printed in hex, without 0x
    max=0x$(hwcap)
    echo "AT_HWCAP with QEMU_CPU=$CPU: $a72; with qemu's default (max): $max"
    (( (a72 >> 1) & 1 )) || { echo "no asimd (NEON)"; return 1; }
    (( !((a72 >> 20) & 1) && !((a72 >> 9) & 1) && !((a72 >> 10) & 1) )) \
        || { echo "dot product or fp16 arithmetic offered: not a Cortex-A72"; return 1; }
    (( (max >> 20) & 1 )) || { echo "max offers no dot product either: the check proves nothing"; return 1; }
}

make_install() {
    # Each line with the time it came, for the times of install.sh's own steps.
    pi bash -c 'cd /src && make install' 2>&1 \
        | while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done
}

# The same, read from the code: no dot-product, matrix, bf16, SVE or fp16 arithmetic
# instruction anywhere in pywhispercpp's libraries (fcvt* between half and single precision
# is ARMv8.0, and stays).
armv82_scan() {
    local f count total=0
    for f in "$PI"/opt/meeting-appliance/lib/python3*/site-packages/{libggml,libwhisper,_pywhispercpp}*.so; do
        count=$(aarch64-linux-gnu-objdump -d --no-show-raw-insn "$f" \
            | grep -E '\s(sdot|udot|usdot|sudot|smmla|ummla|usmmla|bfdot|bfmmla|bfcvt[a-z0-9]*)\s|\sf[a-z0-9]+\s+(v[0-9]+\.[48]h|h[0-9]+),|\sz[0-9]+\.' \
            | grep -cv '\sfcvt' || true)
        echo "$count  ${f#"$PI"}"
        total=$((total + count))
    done
    [ "$total" -eq 0 ]
}

# A program using the dot-product instruction (ARMv8.2) must die of SIGILL (status 132).
sigill() {
    printf 'int main(void) { __asm__ volatile("sdot v0.4s, v1.16b, v2.16b"); return 0; }\n' \
        > "$PI/tmp/dotprod.c"
    # shellcheck disable=SC2016  # $CC is the Pi's
    pi bash -c '${CC:-gcc} -march=armv8.2-a+dotprod -o /tmp/dotprod /tmp/dotprod.c'
    chroot "$PI" /usr/bin/env -i /tmp/dotprod
    echo "with qemu's default CPU (max): runs"
    local status=0
    pi /tmp/dotprod || status=$?
    echo "with QEMU_CPU=$CPU: exit status $status"
    [ "$status" -eq 132 ]
}

models_verify() {
    pi "$APPLIANCE" models list
    pi "$APPLIANCE" models verify
}

# transcribe AUDIO REFERENCE MAX_WER: `appliance transcribe`, scored after normalization.
transcribe() {
    local text
    text=$(pi "$APPLIANCE" transcribe "$1")
    printf 'transcript: %s\nreference:  %s\n' "$text" "$2"
    pi /opt/meeting-appliance/bin/python -c '
import sys, jiwer
from appliance.evaluate import normalize
ref, hyp, limit = normalize(sys.argv[1], "en"), normalize(sys.argv[2], "en"), float(sys.argv[3])
wer = jiwer.wer(ref, hyp)
print(f"normalized: {hyp}\nWER {wer:.1%} (at most {limit:.0%})")
sys.exit(wer > limit)' "$2" "$text" "$3"
}

daemon_start() {
    # As the unit runs it: the service user, the installed config (all defaults: Maildir
    # delivery, /run/meeting-appliance/control.sock), working directory the state folder.
    install -d -m 0750 -o "$(stat -c %u "$PI/var/lib/meeting-appliance")" \
        -g "$(stat -c %g "$PI/var/lib/meeting-appliance")" "$PI/run/meeting-appliance"
    rm -f "$DAEMON_PID" "$DAEMON_STATUS"
    (
        chroot "$PI" /usr/bin/env -i "${PI_ENV[@]}" HOME=/var/lib/meeting-appliance \
            setpriv --reuid=meeting-appliance --regid=meeting-appliance --init-groups \
            bash -c "cd /var/lib/meeting-appliance && exec $APPLIANCE run" &
        echo $! > "$DAEMON_PID"
        status=0
        wait $! || status=$?
        echo "$status" > "$DAEMON_STATUS"
    ) > "$LOGS/daemon.log" 2>&1 &
    local start=$SECONDS
    while [ $((SECONDS - start)) -lt 600 ]; do
        [ ! -e "$DAEMON_STATUS" ] || { cat "$LOGS/daemon.log"; return 1; }
        if pi "$APPLIANCE" status 2>/dev/null | grep -q idle; then
            echo "idle after $((SECONDS - start)) s"
            return 0
        fi
        sleep 1
    done
    cat "$LOGS/daemon.log"
    return 1
}

daemon_meeting() {
    local id state start=$SECONDS
    id=$(pi "$APPLIANCE" start --from-file "$JFK" --to admin@example.com --title "Pi emulated")
    echo "meeting $id"
    while [ $((SECONDS - start)) -lt 900 ]; do
        state=$(pi "$APPLIANCE" meetings --json | pi /opt/meeting-appliance/bin/python -c '
import json, sys
print(next(m["state"] for m in json.load(sys.stdin) if m["id"] == int(sys.argv[1])))' "$id")
        case $state in
            done) echo "done after $((SECONDS - start)) s"; break ;;
            failed*|error*) echo "state $state"; return 1 ;;
        esac
        sleep 1
    done
    [ "$state" = "done" ] || { echo "still $state"; return 1; }
    pi "$APPLIANCE" show "$id"
    pi "$APPLIANCE" status
    local mail
    mail=$(grep -l "fellow Americans" "$PI"/var/lib/meeting-appliance/maildir/new/* | head -1)
    [ -n "$mail" ] || { echo "no email with the transcript in the Maildir"; return 1; }
    echo "delivered: ${mail#"$PI"}"
}

daemon_stop() {
    local start=$SECONDS
    kill -TERM "$(cat "$DAEMON_PID")"
    while [ ! -e "$DAEMON_STATUS" ] && [ $((SECONDS - start)) -lt 180 ]; do sleep 1; done
    tail -n 20 "$LOGS/daemon.log"
    [ -e "$DAEMON_STATUS" ] || { echo "still running after 180 s"; return 1; }
    echo "exit status $(cat "$DAEMON_STATUS") after $((SECONDS - start)) s"
    [ "$(cat "$DAEMON_STATUS")" = 0 ]
}

versions() {
    echo "host: $(uname -srm), $(qemu-aarch64-static --version | head -1)"
    echo "Pi: Debian $(cat "$PI/etc/debian_version"), $(pi uname -m), CPU model $CPU"
    pi /opt/meeting-appliance/bin/python --version
    # shellcheck disable=SC2016  # $CC is the Pi's
    pi bash -c '${CC:-gcc} --version' | head -1
    pi /opt/meeting-appliance/bin/python -m pip list --format=freeze
    cat "$PI/opt/meeting-appliance/.pywhispercpp-source-build"
    find "$PI/opt/meeting-appliance" -name 'libggml-cpu*.so' -exec file {} \;
}

mkdir -p "$CACHE" "$LOGS"
rm -f "$LOGS"/*.log
if [ "$FRESH" = yes ]; then
    unmount_pi
    rm -rf "$BASE" "$BASE.tmp" "$CACHE/apt" "$CACHE/pip" "$CACHE/wheels"  # $PI: in fresh_pi
fi
begin=$(date +%s)
step "host: qemu-user-static, binfmt_misc" host_tools
if [ -d "$BASE" ]; then
    printf '==> arm64 Debian 12 root file system: cached (%s)\n' "$BASE"
else
    step "arm64 Debian 12 root file system (debootstrap)" base_rootfs
fi
step "a fresh Pi: copy of the root, mounts, /src read-only" fresh_pi
step "CPU model $CPU: NEON, no dot product, no fp16" cpu_model
step "make install (apt, venv, pywhispercpp for armv8-a, model)" make_install
step "dot-product instruction dies of SIGILL" sigill
step "no ARMv8.2+ instruction in whisper.cpp's libraries (objdump)" armv82_scan
step "appliance models verify" models_verify
step "appliance transcribe jfk (exact after normalization)" transcribe "$JFK" \
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country." 0
step "appliance transcribe a dev clip" transcribe "$CLIP" \
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them" 0.1
step "appliance run (service user, installed config): idle" daemon_start
step "a meeting from a file, delivered to the Maildir" daemon_meeting
step "SIGTERM: the daemon exits 0" daemon_stop
step "versions (in its log)" versions
printf '==> ok: %d s in all (emulated Cortex-A72, not Pi speed)\n' "$(($(date +%s) - begin))"
printf '%s\n' "${TIMES[@]}"
