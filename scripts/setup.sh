#!/usr/bin/env bash
# Sets up everything difs needs on a Debian machine: the Debian packages of the
# real peers it is tested against and of the VMs' guests (QEMU, a kernel, busybox),
# and a .venv with difs installed in it.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(libiscsi-bin qemu-utils qemu-block-extra libnbd-bin fio tgt postgresql
      qemu-system-x86 linux-image-cloud-amd64 busybox-static)  # the last three: difs vm's guests
missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.difs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing difs and its dependencies into .venv"
    log=.venv/pip-install.log
    if ! { .venv/bin/pip install --disable-pip-version-check -q --upgrade pip &&
           .venv/bin/pip install --disable-pip-version-check -q -e '.[test]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: pip install failed (full log: $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
echo "setup: ready (.venv/bin/difs)"
