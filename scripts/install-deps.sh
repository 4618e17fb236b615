#!/usr/bin/env bash
# Install what drover needs to build, test and benchmark on Debian 12, with
# apt-get, only when something is missing. Safe to run again.
set -euo pipefail

packages=(
    # build
    build-essential pkg-config clang libclang-rt-14-dev clang-format
    # libraries (see docs/adr/0001-dependencies.md)
    libmicrohttpd-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libinih-dev
    libjemalloc-dev
    # tests and benchmarks
    libcmocka-dev python3 python3-pytest wrk sqlite3 iproute2 curl
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
