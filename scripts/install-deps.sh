#!/bin/sh
# Install what building, testing and benchmarking sanprov needs on Debian 12.
# Runs apt-get as root (directly, or through sudo); does nothing when all is there.
set -eu

pkgs="build-essential meson ninja-build pkg-config python3 clang-format libcriterion-dev libucx-dev clang libclang-rt-14-dev"
pkgs="$pkgs libibverbs-dev librdmacm-dev ibverbs-providers"
# The Linux switch's suite runs these under sanprov-run (shim/linux/tests).
pkgs="$pkgs iperf3 sockperf redis-server redis-tools memcached libmemcached-tools nginx wrk curl"
pkgs="$pkgs $*"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo"
else
	echo "install-deps: need root (or sudo) to install:$missing" >&2
	exit 1
fi
echo "install-deps: installing$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
