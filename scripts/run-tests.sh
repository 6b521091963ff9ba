#!/bin/sh
# run-tests.sh UNIT... -- INTEGRATION... [-- FUZZER...]
#
# Runs the unit tests, then starts a throwaway PostgreSQL cluster in a fresh
# temporary directory, runs the integration tests against it (each test makes
# its own databases) and removes the cluster, whatever happened; then each
# libFuzzer harness for FUZZ_SECONDS (default 10). Ends with a
# "N passed, N failed" line and a non-zero exit if anything failed.
set -u
here=$(dirname "$0")
. "$here/pg.sh"

passed=0
failed=0
failures=""

run_one() {
	echo "== $1"
	if "$1"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures="$failures $1"
	fi
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	run_one "$1"
	shift
done
[ $# -gt 0 ] && shift

# The documentation generated from the config table must be committed as is.
echo "== docs/configuration.md matches the config table"
if build/asan/ferryd config-reference | diff -u docs/configuration.md - >/dev/null; then
	passed=$((passed + 1))
else
	build/asan/ferryd config-reference | diff -u docs/configuration.md - | head -40
	echo "docs/configuration.md is stale: run 'make docs'" >&2
	failed=$((failed + 1))
	failures="$failures docs/configuration.md"
fi

integration=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	integration="$integration $1"
	shift
done
[ $# -gt 0 ] && shift
fuzzers="$*"

if [ -n "$integration" ]; then
	tmp=$(mktemp -d /tmp/ferry-test.XXXXXX)
	chmod 755 "$tmp"
	cleanup() {
		# A daemon that died of a sanitizer report took its stderr with it
		# into a log here: show the reports before the logs go.
		if [ "${failed:-0}" -gt 0 ]; then
			for f in $(grep -lE 'WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
				"$tmp"/*.log "$tmp"/*_* 2>/dev/null | sort -u); do
				echo "---- sanitizer report in $(basename "$f") ----"
				grep -A40 -E 'WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$f" | head -120
			done
		fi
		pg_stop "$tmp/pgdata"
		rm -rf "$tmp"
	}
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	# fsync off for speed: the daemons' configs say require_durable = off.
	# The fault suite stops and starts the cluster with the same options.
	export FERRY_TEST_PGOPTS="-c fsync=off -c max_connections=200"
	if pg_init "$tmp/pgdata" && pg_start "$tmp/pgdata" "$tmp/sock" $FERRY_TEST_PGOPTS; then
		export FERRY_TEST_PGHOST="$tmp/sock"
		export FERRY_TEST_PGUSER="$(pg_owner)"
		export FERRY_TEST_TMPDIR="$tmp"
		export FERRY_TEST_PGDATA="$tmp/pgdata"
		export FERRY_TEST_FERRYD="${FERRY_TEST_FERRYD:-build/asan/ferryd}"
		for t in $integration; do
			run_one "$t"
		done
		# The same daemon-level tests against a ThreadSanitizer build.
		if [ -n "${FERRY_TSAN_FERRYD:-}" ]; then
			for t in ${FERRY_TSAN_TESTS:-}; do
				echo "== $t (ferryd under ThreadSanitizer)"
				if FERRY_TEST_FERRYD="$FERRY_TSAN_FERRYD" \
					TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$t"; then
					passed=$((passed + 1))
				else
					failed=$((failed + 1))
					failures="$failures $t(tsan)"
				fi
			done
		fi
	else
		echo "could not start a throwaway PostgreSQL cluster" >&2
		failed=$((failed + 1))
		failures="$failures (postgres)"
	fi
fi

for f in $fuzzers; do
	if sh "$here/run-fuzz.sh" "${FUZZ_SECONDS:-10}" "$f"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures="$failures $f"
	fi
done

echo
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
