#!/bin/sh
# deps.sh [test]: install the Debian packages ferry needs to build, test and run.
#
# Called by `make run` and `make test` before anything is built, so that both
# work on a fresh Debian 12 machine that has only a compiler and make. It asks
# apt only when a package is missing, and refreshes the package index first
# in that case. Without root it names what is missing and fails.
#
# With "test" (`make test`) it also installs what only the tests use: Chromium
# and its WebDriver server, which drive the dashboard page in
# tests/integration/test_ui. `make run` goes without them.
set -eu

PKGS="libcurl4-openssl-dev libnghttp2-dev libssl-dev libpq-dev libmicrohttpd-dev
libcmocka-dev libuv1-dev libjansson-dev postgresql pkg-config curl clang libclang-rt-14-dev
uthash-dev nghttp2-server nghttp2-client prometheus libyaml-dev wrk"

case "${1:-}" in
"") ;;
test) PKGS="$PKGS chromium chromium-driver" ;;
*)
	echo "deps: unknown argument '$1': expected nothing or 'test'" >&2
	exit 1
	;;
esac

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: run 'sudo apt-get install$missing' (or run make as root)" >&2
	exit 1
fi

echo "deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >&2
