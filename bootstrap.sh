#!/usr/bin/env bash
# Prepare a Debian 12 machine for labkit's tasks: the build prerequisites of the Python
# environment (libvirt-python compiles against libvirt-dev) and the environment itself in .venv.
# Idempotent and quick when everything is in place. Everything else (OVS, libvirt, QEMU, services,
# guest image) is installed and started by `invoke host.bootstrap`.
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev)

missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  [ "$(id -u)" = 0 ] || { echo "bootstrap: run as root to install packages" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.labkit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: building the Python environment in .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
