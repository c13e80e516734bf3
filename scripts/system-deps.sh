#!/usr/bin/env bash
# System packages, installed only when missing (with sudo when not root).
#   system-deps.sh venv   what `make run` needs: Python's venv module
#   system-deps.sh        also what the tests and benchmarks need: redis-server (shared
#                         cache tests), chromium and a font (browser tests), wrk (benchmarks),
#                         and for the deploy tests: nginx (front proxy), podman and runc
#                         (the image), debootstrap (its base), systemd (systemd-analyze),
#                         openssl (a self-signed certificate for a TLS test), kubectl
#                         (Debian's kubernetes-client: the kustomization rendered), and
#                         graphviz (docs/architecture.svg from docs/architecture.dot)
set -euo pipefail

missing=()
# Debian's python3 ships venv without ensurepip: python3-venv brings it.
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ "${1:-all}" != venv ]; then
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v chromium >/dev/null || missing+=(chromium)
  [ -d /usr/share/fonts/truetype/liberation ] || missing+=(fonts-liberation)
  command -v wrk >/dev/null || missing+=(wrk)
  has() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
  has nginx || missing+=(nginx)
  has podman || missing+=(podman)
  has runc || missing+=(runc)
  has debootstrap || missing+=(debootstrap)
  has systemd-analyze || missing+=(systemd)
  has openssl || missing+=(openssl)  # a TLS SessionM stand-in's certificate
  has kubectl || missing+=(kubernetes-client)
  has dot || missing+=(graphviz)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "system-deps: please install: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
