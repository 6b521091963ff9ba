#!/bin/sh
# check-banned.sh FILE.c...: every C source must include common/banned.h last.
rc=0
for f in "$@"; do
	case "$f" in build/*) continue ;; esac
	last=$(grep '^#include' "$f" | tail -n 1)
	if [ "$last" != '#include "common/banned.h"' ]; then
		echo "$f: the last #include must be \"common/banned.h\"" >&2
		rc=1
	fi
done
exit $rc
