#!/bin/sh
# run-fuzz.sh SECONDS BIN...: run each libFuzzer harness for SECONDS on a
# scratch copy of its seed corpus (harness fuzz_NAME: tests/fuzz/corpus/NAME),
# so the tree is never written to. A crash leaves its input in
# build/fuzz/crashes/.
set -u
secs=$1
shift
rc=0
mkdir -p build/fuzz/crashes
for bin in "$@"; do
	name=$(basename "$bin")
	work=$(mktemp -d /tmp/ferry-fuzz.XXXXXX)
	seeds="tests/fuzz/corpus/${name#fuzz_}"
	if [ ! -d "$seeds" ]; then
		echo "$name: no seed corpus in $seeds" >&2
		rc=1
		continue
	fi
	cp -r "$seeds/." "$work/"
	echo "== $name (${secs}s)"
	if ! "$bin" -max_total_time="$secs" -print_final_stats=0 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="build/fuzz/crashes/$name-" "$work" >"$work.log" 2>&1; then
		tail -n 60 "$work.log"
		echo "$name: FAILED (input saved under build/fuzz/crashes/)"
		rc=1
	else
		grep -E '^#[0-9]+.*DONE' "$work.log" | tail -n 1
	fi
	rm -rf "$work" "$work.log"
done
exit $rc
