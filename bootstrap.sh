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

# labkit's own modules compiled now: an editable install leaves that to the first import, and where
# PYTHONDONTWRITEBYTECODE is set (CI runners often set it) every command would compile them again
# (0.1 s of each lab.up). Quick when they are up to date.
.venv/bin/python -m compileall -q labkit tasks.py >/dev/null

# The official v4 SDKs at 4.0.x (the first GA; path v4.0, no version negotiation), apart: the tests
# drive the lab's Prism with them too. Their own dependencies come with them (urllib3 1.x).
sdk40=.venv/sdk-4.0
if [ ! -f "$sdk40/.labkit-installed" ]; then
  echo "bootstrap: the Nutanix v4 SDKs 4.0.1 in $sdk40" >&2
  rm -rf "$sdk40"
  .venv/bin/pip install -q --target "$sdk40" ntnx-networking-py-client==4.0.1 ntnx-vmm-py-client==4.0.1 \
    ntnx-clustermgmt-py-client==4.0.1 ntnx-prism-py-client==4.0.1
  touch "$sdk40/.labkit-installed"
fi
