#!/bin/sh
# run-bench.sh: `make bench`, figures to compare across commits (docs/bench.md).
#
# Runs, in order:
#   1. build/bench/bench_proto: the codec's ns/frame (median of 5 runs), and
#      its instructions per call under callgrind (exact);
#   2. a throwaway PostgreSQL cluster in a temporary directory (as
#      run-tests.sh does), a migrated database, and two release bin/ferryd on
#      free 127.0.0.1 ports, log level warn: A with the default workers (one
#      per core), B with one worker (see below);
#   3. bin/ferry-bench idle 19000 on A (fresh): ferryd's VmRSS per idle
#      authenticated connection, and the kernel's slab memory per socket;
#   4. bin/ferry-bench online (the older mode, libferry): latency on B
#      (window 1), throughput on A (4 senders, 4 receivers), each the median
#      of several runs, whose devices steps 5 and 6 reuse;
#  4b. the scenarios on A (one epoll thread drives every connection):
#      pairs 100 x window 4 and 1,000 x window 1, 100 pairs paced to half the
#      first rate and to 100,000/s (end-to-end p99), fanout 100 users x 4
#      devices; ferryd's and the generator's CPU per envelope side by side;
#   5. system calls per envelope over a fixed number of envelopes: perf stat
#      on the syscall tracepoints (no slow-down; ping-pong on B, under load on
#      A) and strace -c -f -p (ping-pong on B); each skipped if missing;
#   6. ferryd's user-space instructions per envelope: a third ferryd (one
#      worker) under callgrind, the difference of two runs of different length;
#   7. the offline store on A (ferry-bench offline): envelopes stored/s for
#      devices that are away (every ACK must say stored), then drained/s as
#      they reconnect, checked empty afterwards (protocol and SQL), with
#      ferryd's and PostgreSQL's CPU per envelope and the store's statements
#      from pg_stat_statements (batch sizes, time per batch);
#   8. the plain-INSERT ceiling (build/bench/bench_insert): the same rows,
#      same batch size, plain multi-row INSERTs from one connection into a
#      scratch database with ferry's schema, and the ratio of the two;
#  8b. reconnect-storm: 10,000 devices on one more daemon, S, restarted under
#      them: seconds until all are back, peak accepts/s, nothing lost;
#  8c. wake-up pushes: 2,000 devices away with APNs tokens on one more daemon,
#      W, pushing to the release mock APNs: pushes/s, ACK -> push latency;
#   9. receipts (ferry-bench --receipts): two more daemons, R1 with receipts
#      as shipped and R0 with [receipts] delivered = off; 1,000 sender ->
#      reader pairs, every message read at once against R1 (one RECEIPT per
#      read, then one per message: the worst case), no reads against R0, the
#      three alternated: messages/s, receipt ids in, DELIVER_RECEIPT frames
#      out, ids per frame and per stored row, ferryd's CPU per message with
#      and without receipts; then 100 pairs at window 8, R1 then R0 (a
#      higher rate per pair: ids per frame grow with it);
#  10. the admin read path under load: one more daemon, M, with 10,000 idle
#      authenticated devices held on it and 8 sender -> receiver pairs paced
#      to a fixed 4,000 envelopes/s; phases alternated on the same
#      connections: no admin load, wrk on GET /v1/stats and on GET /metrics
#      as monitoring (4 connections, paced), then each saturating (wrk -c32):
#      wrk's requests/s and latency per route, the message p50/p99 in each
#      phase and its ratio to the phase without load (the target: p99 at
#      most 1.10), ferryd's CPU.
#
# Why B: with several workers, SO_REUSEPORT puts a sender and its receiver on
# one worker or on two at random, and the cross-worker path costs more (two
# mailbox hops), so one pair's figures would change from run to run. With one
# worker the path, and the counts, are the same every time.
#
# Figures are printed as they come (key=value lines, the scenarios' JSON
# lines, tables), then a summary; every key=value line (the JSON lines too,
# as LABEL.KEY=VALUE) is saved to build/bench/last-run.txt (diff two of them
# to compare commits), and a full run writes bench/results/DATE-COMMIT.json:
# the machine, every JSON line and every figure (docs/performance.md). Everything started here is stopped by PID and
# the temporary directory removed, whatever happens (trap).
#
# Environment: FERRY_BENCH_IDLE (idle connections, default 19000),
# FERRY_BENCH_QUICK=1 (fewer runs and envelopes: a smoke test),
# FERRY_BENCH_CALLGRIND=0 (skip step 6), FERRY_BENCH_OFFLINE=0 (skip steps 7
# and 8), FERRY_BENCH_RECEIPTS=0 (skip step 9), FERRY_BENCH_ADMIN=0 (skip step
# 10), FERRY_BENCH_ADMIN_RUNS (step 10's runs, default 3, at most 6: more for
# a figure to decide on), FERRY_BENCH_ONLY="NAME ..." (only those steps, step
# 2 and the summary always: proto for 1, push for 1b, idle, online, pairs and
# fanout for 4b, syscalls, callgrind for 6, offline for 7 and 8, storm, wake,
# receipts, admin; syscalls and callgrind bring online, whose devices they
# reuse), FERRY_BENCH_RESULTS=1 (write the results document even for a
# partial or quick run).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/pg.sh"

ferryd="$top/bin/ferryd"
bench="$top/bin/ferry-bench"
proto="$top/build/bench/bench_proto"
insert="$top/build/bench/bench_insert"
pushb="$top/build/bench/bench_push"
idle=${FERRY_BENCH_IDLE:-19000}
quick=${FERRY_BENCH_QUICK:-0}
only=${FERRY_BENCH_ONLY:-}
results="$top/build/bench/last-run.txt"

steps="proto push idle online pairs fanout syscalls callgrind offline storm wake receipts admin"
for s in $only; do
	case " $steps " in
	*" $s "*) ;;
	*)
		echo "bench: FERRY_BENCH_ONLY: no step '$s' (steps: $steps)" >&2
		exit 2
		;;
	esac
done

# want NAME...: whether any of these steps is to run (all without FERRY_BENCH_ONLY).
want() {
	[ -z "$only" ] && return 0
	for w in "$@"; do
		case " $only " in *" $w "*) return 0 ;; esac
	done
	return 1
}

for b in "$ferryd" "$bench" "$proto" "$insert" "$pushb"; do
	if [ ! -x "$b" ]; then
		echo "bench: $b is missing; run 'make bench'" >&2
		exit 1
	fi
done

tmp=$(mktemp -d /tmp/ferry-bench.XXXXXX)
chmod 755 "$tmp"
figs="$tmp/figures.txt"
jsonl="$tmp/results.jsonl"
: >"$figs"
: >"$jsonl"
pids=""
failed=""
started=$(date +%s)

# Stop what was started, newest first, each by its PID.
cleanup() {
	trap - EXIT INT TERM
	for p in $pids; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in $pids; do
		wait "$p" 2>/dev/null
	done
	[ -d "$tmp/pgdata" ] && pg_stop "$tmp/pgdata"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() {
	echo
	echo "==== $*"
}

# json2kv: each scenario's JSON line (flat: numbers, null, and strings
# without commas) as LABEL.KEY=VALUE lines, nulls left out.
json2kv() {
	awk '/^\{"scenario"/ {
		s = $0
		sub(/^\{/, "", s)
		sub(/\}$/, "", s)
		n = split(s, kv, ",")
		label = ""
		for (i = 1; i <= n; i++) {
			c = index(kv[i], ":")
			k[i] = substr(kv[i], 1, c - 1)
			v[i] = substr(kv[i], c + 1)
			gsub(/"/, "", k[i])
			if (k[i] == "label") {
				label = v[i]
				gsub(/"/, "", label)
			}
		}
		for (i = 1; i <= n; i++)
			if (k[i] != "label" && k[i] != "scenario" && v[i] != "null")
				printf "%s.%s=%s\n", label, k[i], v[i]
	}'
}

# keep: print stdin and keep its key=value lines, and its scenarios' JSON
# lines (in the results file, and as key=value lines).
keep() {
	tee "$tmp/last.out"
	grep -E '^[A-Za-z0-9_.]+=' "$tmp/last.out" >>"$figs"
	grep -E '^\{"scenario"' "$tmp/last.out" >>"$jsonl"
	json2kv <"$tmp/last.out" >>"$figs"
}

fig() {
	echo "$1=$2" | keep
}

# get KEY: a figure kept so far ("" if none).
get() {
	sed -n "s/^$1=//p" "$figs" | tail -n 1
}

note_failure() {
	failed="$failed $1"
	echo "bench: $1 failed" >&2
}

# ---- 1. the codec ---------------------------------------------------------------

if want proto; then
	section "protocol codec: build/bench/bench_proto (ns/frame, median of 5 runs)"
	iters=200000
	[ "$quick" = 1 ] && iters=20000
	"$proto" --iters "$iters" --runs 5 | keep || note_failure bench_proto

	if command -v valgrind >/dev/null 2>&1; then
		section "protocol codec: instructions per call (callgrind, 1000 calls)"
		for c in deliver100 deliver4k send100 deliver_ack64; do
			for op in encode decode; do
				ir=$(valgrind --tool=callgrind --toggle-collect="proto_$op" \
					--callgrind-out-file=/dev/null "$proto" --case "$c" --op "$op" \
					--iters 1000 --runs 1 --quiet 2>&1 | sed -n 's/.*Collected : //p')
				[ -n "$ir" ] && fig "proto.$c.$op.instructions" $((ir / 1000))
			done
		done
	else
		echo "(valgrind not installed: no instruction counts)"
	fi
fi

# ---- 1b. APNs pushes ------------------------------------------------------------

if want push; then
	section "APNs pushes: ferry's sender vs h2load, one connection to the mock"
	push_n=20000 push_runs=3
	[ "$quick" = 1 ] && push_n=5000 push_runs=1
	"$pushb" --mock "$top/build/bench/mock_apns" --pushes "$push_n" --runs "$push_runs" | keep ||
		note_failure bench_push
fi

# ---- 2. PostgreSQL and ferryd ---------------------------------------------------

section "starting a throwaway PostgreSQL cluster and the release ferryd"
# pg_stat_statements (in postgresql-contrib) times the offline store's
# statements in step 7; without it those figures are skipped.
pss=""
bindir=$(pg_bindir) && [ -f "$(dirname "$bindir")/lib/pg_stat_statements.so" ] &&
	pss="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
# shellcheck disable=SC2086
if ! pg_init "$tmp/pgdata" || ! pg_start "$tmp/pgdata" "$tmp/sock" -c fsync=off \
	-c max_connections=100 $pss; then
	echo "bench: could not start a throwaway PostgreSQL cluster" >&2
	exit 1
fi
pg_createdb "$tmp/sock" ferry_bench || exit 1
pg_pid=$(head -n 1 "$tmp/pgdata/postmaster.pid")

# pg_q DATABASE SQL: run SQL, print the rows unaligned.
pg_q() {
	psql -h "$tmp/sock" -U "$(pg_owner)" -d "$1" -qAtX -c "$2"
}
[ -n "$pss" ] && ! pg_q ferry_bench "CREATE EXTENSION pg_stat_statements" >/dev/null && pss=""

(umask 077 && head -c 32 /dev/urandom | base64 | tr -d '=+/\n' >"$tmp/admin.token")
# write_config FILE GATEWAY_PORT ADMIN_PORT [extra [gateway] lines]
write_config() {
	cat >"$1" <<EOT
[gateway]
listen = 127.0.0.1:$2
${4:-}
[store]
conninfo = "host=$tmp/sock dbname=ferry_bench user=$(pg_owner)"
# the cluster runs with fsync = off, for speed
require_durable = off

[admin]
listen = 127.0.0.1:$3
token_file = $tmp/admin.token

[log]
level = warn
EOT
}

# start_ferryd CONFIG ADMIN_PORT LOG [wrapper...]: sets $ferryd_pid; waits for /healthz.
start_ferryd() {
	cfg=$1 port=$2 log=$3
	shift 3
	"$@" "$ferryd" run -c "$cfg" 2>"$log" &
	ferryd_pid=$!
	pids="$ferryd_pid $pids"
	i=0
	while [ $i -lt 600 ]; do
		if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$ferryd_pid" 2>/dev/null; then
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	echo "bench: ferryd did not come up; its log:" >&2
	cat "$log" >&2
	return 1
}

# stop_pid PID: TERM it, wait for it, forget it.
stop_pid() {
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	rest=""
	for p in $pids; do
		[ "$p" = "$1" ] || rest="$rest $p"
	done
	pids=$rest
}


# Two daemons on one database. A: workers by default (one per core), for the
# throughput and idle figures. B: one worker, for the per-envelope figures:
# with several workers a sender and its receiver land on one worker or on two
# at random (SO_REUSEPORT), and the cross-worker path costs more, so a single
# pair's latency and counts would change from one run to the next.
ga=$("$bench" --free-port) && aa=$("$bench" --free-port) &&
	gb=$("$bench" --free-port) && ab=$("$bench" --free-port) || exit 1
write_config "$tmp/a.ini" "$ga" "$aa" "max_connections = $((idle + 500))"
write_config "$tmp/b.ini" "$gb" "$ab" "workers = 1"
"$ferryd" migrate -c "$tmp/a.ini" >"$tmp/migrate.log" 2>&1 || {
	cat "$tmp/migrate.log" >&2
	exit 1
}
# Idle connections need file descriptors: ferryd inherits the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
start_ferryd "$tmp/a.ini" "$aa" "$tmp/a.log" || exit 1
pid_a=$ferryd_pid
start_ferryd "$tmp/b.ini" "$ab" "$tmp/b.log" || exit 1
pid_b=$ferryd_pid
echo "ferryd A (pid $pid_a, default workers): devices 127.0.0.1:$ga, admin 127.0.0.1:$aa"
echo "ferryd B (pid $pid_b, one worker):      devices 127.0.0.1:$gb, admin 127.0.0.1:$ab"
echo "$(nproc) cores, fd limit $(ulimit -n)"
# Both daemons must still be running before each step; otherwise stop here.
require_ferryd() {
	for p in "$pid_a:$tmp/a.log" "$pid_b:$tmp/b.log"; do
		if ! kill -0 "${p%%:*}" 2>/dev/null; then
			echo "bench: ferryd (pid ${p%%:*}) has stopped; its log:" >&2
			tail -n 20 "${p#*:}" >&2
			exit 1
		fi
	done
}
on_a="--server 127.0.0.1:$ga --admin http://127.0.0.1:$aa --token-file $tmp/admin.token \
--pid $pid_a"
on_b="--server 127.0.0.1:$gb --admin http://127.0.0.1:$ab --token-file $tmp/admin.token \
--pid $pid_b"

# ---- 3. idle connections ----------------------------------------------------------

if want idle; then
	require_ferryd
	section "idle connections (ferryd A, fresh): memory per authenticated idle connection"
	# shellcheck disable=SC2086
	"$bench" $on_a idle "$idle" | keep || note_failure idle
fi

# ---- 4. online delivery -------------------------------------------------------------

if want online syscalls callgrind; then
	runs=3 lat_count=5000 tp_count=20000
	[ "$quick" = 1 ] && runs=2 lat_count=300 tp_count=500

	require_ferryd
	section "online delivery (ferryd B, one worker): latency, one envelope at a time"
	# shellcheck disable=SC2086
	"$bench" $on_b --label latency --senders 1 --receivers 1 --window 1 \
		--count "$lat_count" --runs "$runs" --save-creds "$tmp/creds1.txt" | keep ||
		note_failure latency

	require_ferryd
	section "online delivery (ferryd A): throughput, 100-byte payloads"
	# shellcheck disable=SC2086
	"$bench" $on_a --label throughput --senders 4 --receivers 4 --window 32 \
		--count "$tp_count" --runs "$runs" --save-creds "$tmp/creds4.txt" | keep ||
		note_failure throughput

fi

# ---- 4b. pairs and fan-out: the scenarios' targets ------------------------------------

# ferry-bench's scenarios on A: one epoll thread drives every connection, so
# that the generator is not the limit (its CPU per envelope is reported
# beside ferryd's). 100 pairs at window 4 unpaced; 1,000 pairs at window 1
# unpaced; 100 pairs paced to half the first run's rate and to 100,000/s
# (the targets' p99); one sender's messages to 100 users of 4 devices.
pr_dur=3 pr_warm=1
[ "$quick" = 1 ] && pr_dur=1 pr_warm=0.5
if want pairs; then
	require_ferryd
	section "pairs (ferryd A): 100 pairs x window 4, 1,000 x window 1, then paced; 100-byte payloads"
	# shellcheck disable=SC2086
	"$bench" $on_a --label pairs100 --save-creds "$tmp/creds_p100.txt" pairs 100 --window 4 \
		--payload 100 --warmup "$pr_warm" --duration "$pr_dur" | keep || note_failure pairs100
	# shellcheck disable=SC2086
	"$bench" $on_a --label pairs1000 --save-creds "$tmp/creds_p1000.txt" pairs 1000 \
		--window 1 --payload 100 --warmup "$pr_warm" --duration "$pr_dur" | keep ||
		note_failure pairs1000
	half=$(get pairs100.envelopes_per_s | awk '{ printf "%d", $1 / 2 }')
	[ -n "$half" ] && [ "$half" -gt 0 ] || half=50000
	for r in "half:$half" "100k:100000"; do
		# shellcheck disable=SC2086
		"$bench" $on_a --label "pairs100_${r%%:*}" --creds "$tmp/creds_p100.txt" pairs 100 \
			--window 4 --payload 100 --rate "${r#*:}" --warmup "$pr_warm" \
			--duration "$pr_dur" | keep || note_failure "pairs100 paced ${r#*:}"
	done
fi

if want fanout; then
	require_ferryd
	section "fan-out (ferryd A): one sender to 100 users of 4 devices each"
	# shellcheck disable=SC2086
	"$bench" $on_a --label fanout fanout 100 --devices 4 --window 32 --payload 100 \
		--warmup "$pr_warm" --duration "$pr_dur" | keep || note_failure fanout
fi

# ---- 5. system calls per envelope -------------------------------------------------

# bench_again LABEL PORT CREDS SENDERS WINDOW COUNT: the devices of an earlier
# run, once more, for a fixed number of envelopes.
bench_again() {
	"$bench" --server "127.0.0.1:$2" --creds "$3" --senders "$4" --receivers "$4" \
		--window "$5" --count "$6" --runs 1 --label "$1"
}

# The syscall tracepoints perf can count here (none: perf is skipped).
perf_events=""
if command -v perf >/dev/null 2>&1; then
	for e in raw_syscalls:sys_enter syscalls:sys_enter_write syscalls:sys_enter_read \
		syscalls:sys_enter_epoll_wait syscalls:sys_enter_futex context-switches; do
		if perf stat -e "$e" -- true >/dev/null 2>&1; then
			perf_events="$perf_events${perf_events:+,}$e"
		fi
	done
	case $perf_events in raw_syscalls:sys_enter*) ;; *) perf_events="" ;; esac
fi

# perf_count LABEL PID bench_again-ARGS...: syscalls (and a breakdown) per
# acknowledged envelope of one bench_again run, counted with perf stat.
perf_count() {
	label=$1 target=$2
	shift 2
	perf stat -x, -e "$perf_events" -p "$target" -o "$tmp/perf.txt" &
	perf_pid=$!
	pids="$perf_pid $pids"
	sleep 0.5
	bench_again "$label" "$@" >"$tmp/sysrun.out" || note_failure "$label"
	kill -INT "$perf_pid" 2>/dev/null
	wait "$perf_pid" 2>/dev/null
	stop_pid "$perf_pid"
	acked=$(sed -n "s/^$label.acked=//p" "$tmp/sysrun.out")
	if [ -z "$acked" ] || [ "$acked" -eq 0 ]; then
		echo "($label: no envelopes acknowledged)"
		return
	fi
	fig "syscalls.$label.envelopes" "$acked"
	awk -F, -v e="$acked" -v l="syscalls.$label" '
		$3 == "raw_syscalls:sys_enter" { printf "%s.per_envelope=%.2f\n", l, $1 / e }
		$3 ~ /^syscalls:sys_enter_/ {
			n = $3; sub(/^syscalls:sys_enter_/, "", n)
			printf "%s.%s=%.2f\n", l, n, $1 / e
		}
		$3 == "context-switches" { printf "%s.context_switches=%.2f\n", l, $1 / e }' \
		"$tmp/perf.txt" | keep
}

if want syscalls; then
	require_ferryd
	section "system calls per envelope: perf stat (no slow-down)"
	if [ -n "$perf_events" ]; then
		echo "-- ping-pong: ferryd B, 1 sender -> 1 receiver, window 1"
		perf_count pingpong "$pid_b" "$gb" "$tmp/creds1.txt" 1 1 "$lat_count"
		echo "-- under load: ferryd A, 4 senders -> 4 receivers, window 32"
		perf_count load "$pid_a" "$ga" "$tmp/creds4.txt" 4 32 "$tp_count"
	else
		echo "(perf missing, or it cannot count syscall tracepoints here: skipped)"
	fi

	require_ferryd
	section "system calls per envelope: strace -c -f -p (ping-pong on ferryd B)"
	if command -v strace >/dev/null 2>&1; then
		strace -c -f -p "$pid_b" -o "$tmp/strace.txt" 2>"$tmp/strace.err" &
		strace_pid=$!
		pids="$strace_pid $pids"
		sleep 1
		s_count=2000
		[ "$quick" = 1 ] && s_count=300
		bench_again strace "$gb" "$tmp/creds1.txt" 1 1 "$s_count" >"$tmp/sysrun.out" ||
			note_failure "strace run"
		kill -INT "$strace_pid" 2>/dev/null
		wait "$strace_pid" 2>/dev/null
		stop_pid "$strace_pid"
		acked=$(sed -n 's/^strace.acked=//p' "$tmp/sysrun.out")
		if [ -s "$tmp/strace.txt" ] && [ -n "$acked" ] && [ "$acked" -gt 0 ]; then
			fig syscalls.strace.envelopes "$acked"
			awk -v e="$acked" '
				/^-/ || /% time/ || NF < 5 { next }
				$NF == "total" { t = $4; next }
				$4 / e >= 0.01 { printf "syscalls.strace.%s=%.2f\n", $NF, $4 / e }
				END { printf "syscalls.strace.per_envelope=%.2f\n", t / e }' \
				"$tmp/strace.txt" | sort -t= -k2 -rn | keep
		else
			echo "(strace could not attach or counted nothing)"
			cat "$tmp/strace.err"
		fi
	else
		echo "(strace not installed: skipped)"
	fi
fi

# ---- 6. ferryd's instructions per envelope ----------------------------------------

# cg_run N: N ping-pong envelopes through ferryd C; prints the instructions
# it executed meanwhile (counters zeroed before, dumped after).
cg_run() {
	rm -f "$tmp"/cg.out."$cg_pid".*
	callgrind_control -z "$cg_pid" >/dev/null 2>&1 || return 1
	bench_again cg "$gc" "$tmp/creds1.txt" 1 1 "$1" >"$tmp/cg_run.out" || return 1
	callgrind_control -d "$cg_pid" >/dev/null 2>&1 || return 1
	i=0
	while [ $i -lt 50 ] && ! ls "$tmp"/cg.out."$cg_pid".* >/dev/null 2>&1; do
		sleep 0.1
		i=$((i + 1))
	done
	sleep 0.2
	f=$(ls "$tmp"/cg.out."$cg_pid".* 2>/dev/null | head -n 1)
	[ -n "$f" ] && sed -n 's/^summary: *//p; s/^totals: *//p' "$f" | head -n 1
}

if want callgrind; then
	require_ferryd
	section "ferryd instructions per envelope (callgrind, one worker, user space)"
	if [ "${FERRY_BENCH_CALLGRIND:-1}" != 0 ] && command -v valgrind >/dev/null 2>&1 &&
		command -v callgrind_control >/dev/null 2>&1; then
		gc=$("$bench" --free-port) && ac=$("$bench" --free-port)
		# Slowed some 50 times: no DELIVER may time out waiting for its ack.
		write_config "$tmp/c.ini" "$gc" "$ac" "workers = 1
	ack_timeout = 30000"
		if start_ferryd "$tmp/c.ini" "$ac" "$tmp/c.log" valgrind --tool=callgrind \
			--callgrind-out-file="$tmp/cg.out.%p"; then
			cg_pid=$ferryd_pid
			cg_small=200 cg_big=4200
			[ "$quick" = 1 ] && cg_big=400
			# The difference of two runs leaves out connecting, HELLO and the like.
			if ir1=$(cg_run $cg_small) && ir2=$(cg_run $cg_big) && [ -n "$ir1" ] &&
				[ -n "$ir2" ]; then
				fig ferryd.instructions_per_envelope $(((ir2 - ir1) / (cg_big - cg_small)))
			else
				echo "(callgrind gave no counts)"
			fi
			stop_pid "$cg_pid"
		else
			note_failure "ferryd under callgrind"
		fi
	else
		echo "(skipped: FERRY_BENCH_CALLGRIND=0, or valgrind or callgrind_control missing)"
	fi
fi

# ---- 7. the offline store --------------------------------------------------------

# N recipients x K envelopes a run (100 B payloads), 4 senders with 256 SENDs
# each in flight: enough for the store to batch as it would under load.
off_n=500 off_k=200 off_runs=3
[ "$quick" = 1 ] && off_n=50 off_k=20 off_runs=1
offline=${FERRY_BENCH_OFFLINE:-1}

# store_stats: the store's statements since the reset, from pg_stat_statements
# (wall time inside PostgreSQL, all runs together).
store_stats() {
	pg_q ferry_bench "
	WITH s AS (
		SELECT query, toplevel, calls, rows, total_exec_time AS ms FROM pg_stat_statements
		 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())),
	put AS (SELECT sum(calls) AS c, sum(rows) AS r, sum(ms) AS ms FROM s
		 WHERE toplevel AND query LIKE '%FROM ferry_put_batch(%'),
	fet AS (SELECT sum(calls) AS c, sum(rows) AS r, sum(ms) AS ms FROM s
		 WHERE toplevel AND query LIKE 'SELECT seq, server_id,%'),
	del AS (SELECT sum(calls) AS c, sum(ms) AS ms FROM s
		 WHERE toplevel AND query LIKE '%ferry_delete(%'),
	dr AS (SELECT sum(rows) AS r FROM s
		 WHERE NOT toplevel AND query LIKE 'DELETE FROM envelopes WHERE recipient_device%')
	SELECT format('store.put_batches=%s', put.c) FROM put WHERE put.c > 0
	UNION ALL SELECT format('store.put_envelopes_per_batch=%s', round(put.r / put.c, 1))
	  FROM put WHERE put.c > 0
	UNION ALL SELECT format('store.put_ms_per_batch=%s', round((put.ms / put.c)::numeric, 2))
	  FROM put WHERE put.c > 0
	UNION ALL SELECT format('store.put_db_us_per_env=%s', round((put.ms * 1000 / put.r)::numeric, 2))
	  FROM put WHERE put.r > 0
	UNION ALL SELECT format('store.fetches=%s', fet.c) FROM fet WHERE fet.c > 0
	UNION ALL SELECT format('store.fetch_rows_per_call=%s', round(fet.r / fet.c, 1))
	  FROM fet WHERE fet.c > 0
	UNION ALL SELECT format('store.fetch_db_us_per_env=%s', round((fet.ms * 1000 / fet.r)::numeric, 2))
	  FROM fet WHERE fet.r > 0
	UNION ALL SELECT format('store.deletes=%s', del.c) FROM del WHERE del.c > 0
	UNION ALL SELECT format('store.delete_ids_per_call=%s', round(dr.r / del.c, 1))
	  FROM del, dr WHERE del.c > 0 AND dr.r > 0
	UNION ALL SELECT format('store.delete_db_us_per_env=%s', round((del.ms * 1000 / dr.r)::numeric, 2))
	  FROM del, dr WHERE dr.r > 0"
}

# ratio KEY A B: KEY = A / B (3 decimals), if both figures exist.
ratio() {
	a=$(get "$2") b=$(get "$3")
	[ -n "$a" ] && [ -n "$b" ] &&
		fig "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", a / b }')"
}

if want offline && [ "$offline" != 0 ]; then
	require_ferryd
	section "offline store (ferryd A): $off_n devices away x $off_k envelopes, then drained"
	[ -n "$pss" ] && pg_q ferry_bench "SELECT pg_stat_statements_reset()" >/dev/null
	# shellcheck disable=SC2086
	"$bench" $on_a --pg-pid "$pg_pid" --save-creds "$tmp/creds_off.txt" --label offline \
		offline "$off_n" --per-device "$off_k" --senders 4 --window 256 | keep ||
		note_failure offline
	for k in offline.store_errors offline.drain_errors; do
		v=$(get "$k")
		[ -z "$v" ] || [ "$v" = 0 ] || note_failure "offline ($k=$v)"
	done
	# Nothing of the recipients' may be left in the database (senders get nothing).
	ids=$(awk '!/^#/ && NF == 3 { printf "%s%s", sep, $2; sep = "," }' \
		"$tmp/creds_off.txt" 2>/dev/null)
	if [ -n "$ids" ]; then
		fig offline.rows_left_sql \
			"$(pg_q ferry_bench "SELECT count(*) FROM envelopes WHERE recipient_device IN ($ids)")"
		fig offline.pending_left_sql "$(pg_q ferry_bench \
			"SELECT coalesce(sum(pending), 0) FROM devices WHERE id IN ($ids)")"
		[ "$(get offline.rows_left_sql)" = 0 ] || note_failure "offline (rows left)"
	fi
	if [ -n "$pss" ]; then
		echo "-- the store's statements (pg_stat_statements, all runs):"
		store_stats | keep
		# The share of the store phase the writer's backend spent in ferry_put_batch.
		w=$(get store.put_db_us_per_env) s=$(get offline.stored_per_s)
		[ -n "$w" ] && [ -n "$s" ] &&
			fig store.writer_busy "$(awk -v w="$w" -v s="$s" 'BEGIN { printf "%.2f", w * s / 1e6 }')"
	else
		echo "(pg_stat_statements not available: no batch figures)"
	fi

	# ---- 8. the plain-INSERT ceiling --------------------------------------------------

	section "plain INSERT ceiling: the same rows, same batch size, one connection"
	pg_createdb "$tmp/sock" ferry_plain || exit 1
	printf '[store]\nconninfo = "host=%s dbname=ferry_plain user=%s"\n' "$tmp/sock" \
		"$(pg_owner)" >"$tmp/plain.ini"
	if "$ferryd" migrate -c "$tmp/plain.ini" >"$tmp/migrate_plain.log" 2>&1; then
		# The store's mean batch when known, else [store] batch_max's default.
		batch=$(get store.put_envelopes_per_batch | awk '{ printf "%d", $1 + 0.5 }')
		[ -n "$batch" ] && [ "$batch" -ge 1 ] || batch=2000
		"$insert" --conninfo "host=$tmp/sock dbname=ferry_plain user=$(pg_owner)" \
			--devices "$off_n" --rows $((off_n * off_k)) --batch "$batch" \
			--runs "$off_runs" --pg-pid "$pg_pid" --label plain | keep ||
			note_failure "plain INSERT"
		ratio offline.stored_vs_plain offline.stored_per_s plain.rows_per_s
		ratio offline.pg_cpu_vs_plain offline.store_pg_cpu_us_per_env plain.pg_cpu_us_per_row
	else
		cat "$tmp/migrate_plain.log" >&2
		note_failure "plain INSERT (migrate)"
	fi
elif want offline; then
	section "offline store and plain INSERT: skipped (FERRY_BENCH_OFFLINE=0)"
fi

# ---- 8b. a reconnect storm ---------------------------------------------------------

# One more daemon, S (default workers), started detached (sh -c '... &') so
# that the restart command, run by ferry-bench, can stop it and start the
# next one with no shell waiting on either: storm_n devices connected and
# 1,000 envelopes stored for 100 devices away, then S restarted (SIGTERM,
# wait, start); every device reconnects at once. Nothing acknowledged may
# be lost. FERRY_BENCH_MAX_HANDSHAKES sets S's [gateway] max_handshakes (to
# compare the admission limit with none: 100000).
storm_n=19000
[ "$quick" = 1 ] && storm_n=1000

# start_detached CONFIG LOG PIDFILE: ferryd in the background, not our child.
start_detached() {
	sh -c "exec \"$ferryd\" run -c \"$1\" >>\"$2\" 2>&1 </dev/null &
echo \$! >\"$3\""
}

# wait_gone PID: until it has exited (at most 30 s).
wait_gone() {
	i=0
	while kill -0 "$1" 2>/dev/null && [ $i -lt 600 ]; do
		sleep 0.05
		i=$((i + 1))
	done
}

if want storm; then
	require_ferryd
	section "reconnect storm: $storm_n devices, ferryd S restarted under them"
	gs=$("$bench" --free-port) && as=$("$bench" --free-port) || exit 1
	write_config "$tmp/s.ini" "$gs" "$as" "max_connections = $((storm_n + 1000))
${FERRY_BENCH_MAX_HANDSHAKES:+max_handshakes = $FERRY_BENCH_MAX_HANDSHAKES}"
	cat >"$tmp/restart.sh" <<EOT
p=\$(cat "$tmp/s.pid")
kill -TERM "\$p"
while kill -0 "\$p" 2>/dev/null; do sleep 0.02; done
$(command -v sh) -c 'exec "$ferryd" run -c "$tmp/s.ini" >>"$tmp/s.log" 2>&1 </dev/null &
echo \$! >"$tmp/s.pid"'
EOT
	start_detached "$tmp/s.ini" "$tmp/s.log" "$tmp/s.pid"
	i=0
	while ! curl -sf "http://127.0.0.1:$as/healthz" >/dev/null 2>&1 && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	"$bench" --server "127.0.0.1:$gs" --admin "http://127.0.0.1:$as" \
		--token-file "$tmp/admin.token" --label storm reconnect-storm "$storm_n" \
		--stored 1000 --restart-cmd "sh $tmp/restart.sh" | keep || note_failure "reconnect storm"
	p=$(cat "$tmp/s.pid")
	kill -TERM "$p" 2>/dev/null
	wait_gone "$p"
fi

# ---- 8c. wake-up pushes -------------------------------------------------------------

# One more daemon, W, whose [push.apns] points at the release mock APNs
# (build/bench/mock_apns, request log on): wake_n devices away with APNs
# tokens get one envelope each; ferry-bench reads the mock's log as it grows
# for each push's arrival.
wake_n=2000
[ "$quick" = 1 ] && wake_n=200

if want wake; then
	require_ferryd
	section "wake-up pushes: $wake_n devices away with APNs tokens, ferryd W -> mock APNs"
	mkdir -p "$tmp/push"
	if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$tmp/push/key.pem" -out "$tmp/push/cert.pem" 2>/dev/null &&
		(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
			-out "$tmp/push/AuthKey.p8" 2>/dev/null) &&
		openssl pkey -in "$tmp/push/AuthKey.p8" -pubout -out "$tmp/push/pub.pem" 2>/dev/null; then
		: >"$tmp/push/mock.log"
		"$top/build/bench/mock_apns" --port 0 --cert "$tmp/push/cert.pem" \
			--key "$tmp/push/key.pem" --auth-key "$tmp/push/pub.pem" \
			--key-id BENCHKEY01 --team-id BENCHTEAM1 --log "$tmp/push/mock.log" \
			>"$tmp/push/mock.out" 2>&1 &
		mock_pid=$!
		pids="$mock_pid $pids"
		i=0
		while ! grep -q '^listening' "$tmp/push/mock.out" && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		mport=$(sed -n 's/^listening //p' "$tmp/push/mock.out")
		gw=$("$bench" --free-port) && aw=$("$bench" --free-port) || exit 1
		write_config "$tmp/w.ini" "$gw" "$aw" "
[push]
ca_file = $tmp/push/cert.pem

[push.apns]
endpoint = https://127.0.0.1:$mport
key_file = $tmp/push/AuthKey.p8
key_id = BENCHKEY01
team_id = BENCHTEAM1
topic = dev.ferry.bench"
		if [ -n "$mport" ] && start_ferryd "$tmp/w.ini" "$aw" "$tmp/w.log"; then
			pid_w=$ferryd_pid
			# shellcheck disable=SC2086
			"$bench" --server "127.0.0.1:$gw" --admin "http://127.0.0.1:$aw" \
				--token-file "$tmp/admin.token" --pid "$pid_w" --label wake \
				--push-log "$tmp/push/mock.log" push "$wake_n" | keep ||
				note_failure "wake-up pushes"
			stop_pid "$pid_w"
		else
			note_failure "wake-up pushes (mock APNs or ferryd W)"
		fi
		stop_pid "$mock_pid"
	else
		note_failure "wake-up pushes (keys)"
	fi
fi

# ---- 9. receipts --------------------------------------------------------------------

# A chatty workload (ferry-bench --receipts): P sender -> reader pairs, each
# device its own user; each reader acknowledges every DELIVER and at once
# reads it. Two more daemons on the same database, default workers: R1 with
# receipts as shipped (flush_interval 50 ms, max_batch 512) and R0 with
# [receipts] delivered = off, against which the readers send no read receipts
# either: the baseline without receipts. Against R1 the readers read as an
# app does, one RECEIPT for the messages of one read (--read-batch: the
# receipts.* figures), and then one RECEIPT per message, the worst case
# (receipts_each.*). The invocations alternate R1 batched, R0, R1 per
# message, R1 batched, ... so that the machine's noise falls on all three,
# and the figures are the medians over them (each invocation's own figure
# being the median of its runs). 2,000 device threads on 2 cores can leave a reader
# unscheduled for longer than the default ack_timeout (250 ms), and ferryd
# would then store its DELIVERs: both daemons get 5 s, so that what is
# measured is online delivery and receipts, not the store.
rc_pairs=1000 rc_window=4 rc_dur=2 rc_runs=2 rc_alt=1
[ "$quick" = 1 ] && rc_pairs=100 rc_dur=1 rc_runs=1 rc_alt=1

# medians PREFIX FILE...: PREFIX.KEY = the median over the FILEs of each
# numeric LABEL.KEY=value line (the upper one of an even count, as
# ferry-bench takes it over runs).
medians() {
	prefix=$1
	shift
	cat "$@" | awk -F= -v p="$prefix" '
		/^[A-Za-z0-9_]+\.[A-Za-z0-9_.]+=-?[0-9.]+$/ {
			k = $1
			sub(/^[^.]*\./, "", k)
			if (!(k in n))
				order[++nk] = k
			v[k, ++n[k]] = $2
		}
		END {
			for (i = 1; i <= nk; i++) {
				k = order[i]
				m = n[k]
				for (a = 2; a <= m; a++) {
					x = v[k, a]
					for (b = a - 1; b >= 1 && v[k, b] + 0 > x + 0; b--)
						v[k, b + 1] = v[k, b]
					v[k, b + 1] = x
				}
				printf "%s.%s=%s\n", p, k, v[k, int(m / 2) + 1]
			}
		}'
}

# rc_brief FILE: one invocation's main figures on one line.
rc_brief() {
	k='msgs_per_s|ids_per_receipt_in|ids_per_frame|ferryd_cpu_us_per_msg|ids_per_stored_row'
	grep -E "^rc\.($k)=" "$1" | sed 's/^rc\.//' | tr '\n' ' '
	echo
}

if want receipts && [ "${FERRY_BENCH_RECEIPTS:-1}" != 0 ]; then
	require_ferryd
	rc_started=$(date +%s)
	section "receipts: $rc_pairs pairs, window $rc_window, every message read at once," \
		"one RECEIPT per read (R1), none (R0), one per message (R1), alternated $rc_alt times"
	g1=$("$bench" --free-port) && a1=$("$bench" --free-port) &&
		g0=$("$bench" --free-port) && a0=$("$bench" --free-port) || exit 1
	write_config "$tmp/r1.ini" "$g1" "$a1" "ack_timeout = 5000"
	write_config "$tmp/r0.ini" "$g0" "$a0" "ack_timeout = 5000

[receipts]
delivered = off"
	if start_ferryd "$tmp/r1.ini" "$a1" "$tmp/r1.log" && pid_r1=$ferryd_pid &&
		start_ferryd "$tmp/r0.ini" "$a0" "$tmp/r0.log"; then
		pid_r0=$ferryd_pid
		echo "ferryd R1 (pid $pid_r1, receipts on):       devices 127.0.0.1:$g1, admin 127.0.0.1:$a1"
		echo "ferryd R0 (pid $pid_r0, delivered = off):   devices 127.0.0.1:$g0, admin 127.0.0.1:$a0"
		on_r1="--server 127.0.0.1:$g1 --admin http://127.0.0.1:$a1 --pid $pid_r1"
		on_r0="--server 127.0.0.1:$g0 --admin http://127.0.0.1:$a0 --pid $pid_r0"
		rc_args="--receipts $rc_pairs --window $rc_window --count 100000000 \
--duration $rc_dur --runs $rc_runs --token-file $tmp/admin.token --label rc"
		# The first R1 invocation makes the devices and runs the away phase
		# (ids per stored row); the others reuse the devices and skip it.
		creds="--save-creds $tmp/creds_rc.txt" away=""
		i=1
		while [ $i -le $rc_alt ]; do
			# shellcheck disable=SC2086
			"$bench" $on_r1 $rc_args $creds $away --read-batch >"$tmp/rc1.$i.out" ||
				note_failure "receipts (R1 batched, run $i)"
			creds="--creds $tmp/creds_rc.txt" away="--away-reads 0"
			# shellcheck disable=SC2086
			"$bench" $on_r0 $rc_args $creds --no-reads >"$tmp/rc0.$i.out" ||
				note_failure "receipts (R0, run $i)"
			# shellcheck disable=SC2086
			"$bench" $on_r1 $rc_args $creds $away >"$tmp/rce.$i.out" ||
				note_failure "receipts (R1 per message, run $i)"
			[ $i = 1 ] && grep -hvE '^[A-Za-z0-9_.]+=' "$tmp/rc1.1.out" "$tmp/rc0.1.out" \
				"$tmp/rce.1.out"
			printf 'R1 batched, run %s:     %s\n' $i "$(rc_brief "$tmp/rc1.$i.out")"
			printf 'R0, run %s:             %s\n' $i "$(rc_brief "$tmp/rc0.$i.out")"
			printf 'R1 per message, run %s: %s\n' $i "$(rc_brief "$tmp/rce.$i.out")"
			i=$((i + 1))
		done
		echo "-- medians over the $rc_alt alternated invocations:"
		medians receipts "$tmp"/rc1.*.out | keep >/dev/null
		medians receipts_base "$tmp"/rc0.*.out | keep >/dev/null
		medians receipts_each "$tmp"/rce.*.out | keep >/dev/null
		for k in msgs_per_s read_ids_in_per_s receipts_in_per_s ids_per_receipt_in \
			frames_out_per_s ids_out_per_s ids_per_frame_delivered ids_per_frame_read \
			ids_per_frame srv_ids_per_batch away_srv_ids_per_batch ids_per_stored_row \
			ferryd_cpu_us_per_msg stored; do
			v=$(get "receipts.$k")
			[ -n "$v" ] && echo "receipts.$k=$v"
		done
		for k in msgs_per_s ferryd_cpu_us_per_msg stored; do
			v=$(get "receipts_base.$k")
			[ -n "$v" ] && echo "receipts_base.$k=$v"
		done
		for k in msgs_per_s ids_per_receipt_in frames_out_per_s ids_per_frame \
			ferryd_cpu_us_per_msg stored; do
			v=$(get "receipts_each.$k")
			[ -n "$v" ] && echo "receipts_each.$k=$v"
		done
		c0=$(get receipts_base.ferryd_cpu_us_per_msg)
		for l in receipts receipts_each; do
			c1=$(get $l.ferryd_cpu_us_per_msg)
			[ -n "$c1" ] && [ -n "$c0" ] && fig $l.cpu_overhead_pct \
				"$(awk -v a="$c1" -v b="$c0" 'BEGIN { if (b > 0) printf "%.1f", (a / b - 1) * 100 }')"
			ratio $l.msgs_per_s_vs_base $l.msgs_per_s receipts_base.msgs_per_s
		done

		section "receipts: 100 pairs, window 8 (R1 batched, then R0): a higher rate per pair"
		rc_args="--receipts 100 --window 8 --count 100000000 --duration 1 --runs 3 \
--away-reads 0 --token-file $tmp/admin.token --creds $tmp/creds_rc.txt"
		[ "$quick" = 1 ] && rc_args="$rc_args --runs 1"
		# shellcheck disable=SC2086
		"$bench" $on_r1 $rc_args --read-batch --label receipts100 | keep ||
			note_failure "receipts (100 pairs, R1)"
		# shellcheck disable=SC2086
		"$bench" $on_r0 $rc_args --no-reads --label receipts100_base >"$tmp/rc100.out" ||
			note_failure "receipts (100 pairs, R0)"
		grep -E '^receipts100_base\.(msgs_per_s|ferryd_cpu_us_per_msg|stored)=' "$tmp/rc100.out" |
			keep
		c1=$(get receipts100.ferryd_cpu_us_per_msg) c0=$(get receipts100_base.ferryd_cpu_us_per_msg)
		[ -n "$c1" ] && [ -n "$c0" ] && fig receipts100.cpu_overhead_pct \
			"$(awk -v a="$c1" -v b="$c0" 'BEGIN { if (b > 0) printf "%.1f", (a / b - 1) * 100 }')"

		# Every receipt was taken: nothing may wait in the store for these devices.
		ids=$(awk '!/^#/ && NF == 3 { printf "%s%s", sep, $2; sep = "," }' \
			"$tmp/creds_rc.txt" 2>/dev/null)
		if [ -n "$ids" ]; then
			fig receipts.rows_left_sql \
				"$(pg_q ferry_bench "SELECT count(*) FROM envelopes WHERE recipient_device IN ($ids)")"
			[ "$(get receipts.rows_left_sql)" = 0 ] || note_failure "receipts (rows left)"
		fi
		stop_pid "$pid_r0"
		stop_pid "$pid_r1"
		echo "(receipts: $(($(date +%s) - rc_started)) s)"
	else
		note_failure "receipts (ferryd R0 or R1)"
	fi
elif want receipts; then
	section "receipts: skipped (FERRY_BENCH_RECEIPTS=0)"
fi

# ---- 10. the admin read path under load -------------------------------------------

# The issue's requirement: GET /v1/stats and GET /metrics requests/s (wrk)
# while 10,000 devices are connected, and the admin load may raise the
# message p99 by 10 % at most. One more daemon, M (default workers,
# max_connections above the held devices), on the same database. One
# ferry-bench invocation holds adm_hold idle authenticated devices on it
# (--hold) and runs adm_pairs sender -> receiver pairs paced to adm_rate
# envelopes/s in all (--rate; a fixed offered load, a few per cent of what A
# acknowledges unpaced), window 8, adm_dur seconds a round. Each run is six
# phases on the same connections (--load): no admin load; a "load" that does
# nothing (sleep), whose ratio to the first phase is the noise floor of
# every ratio here (the machine is shared); wrk on /v1/stats,
# then on /metrics, as monitoring: 4 connections, each sending its next
# request adm_delay ms after an answer (some 40 requests/s in all: many
# scrapers and dashboards at once, far above what Prometheus sends); then
# wrk -t1 -c32 unpaced on each, saturating: a separate figure, ferryd's admin
# threads then taking most of a core. wrk runs at nice 19: it stands in for
# clients on other machines and shares these 2 cores only because there is
# one machine; at normal priority its own CPU time, not ferryd's, would
# raise the saturating phases' p99 several times (docs/bench.md). adm_runs
# runs; each phase's figures are medians over them, and its message p99 is
# compared with the phase without load of the same run (ferry-bench prints
# the median of those ratios).
adm_hold=10000 adm_pairs=8 adm_rate=4000 adm_dur=1.25 adm_runs=${FERRY_BENCH_ADMIN_RUNS:-2}
adm_delay=100
[ "$quick" = 1 ] && adm_hold=1000 adm_dur=1 adm_runs=1
adm_phases="stats metrics stats_sat metrics_sat"

# wrk_figs FILE: one wrk report (--latency) as key=value lines: requests/s,
# latency p50 and p99 in us, errors (non-2xx answers and socket errors).
wrk_figs() {
	awk '
	function us(v) {
		if (v ~ /us$/)
			return v + 0
		if (v ~ /ms$/)
			return (v + 0) * 1000
		if (v ~ /s$/)
			return (v + 0) * 1000000
		return v + 0
	}
	/^Requests\/sec:/ { printf "wrk_req_per_s=%.0f\n", $2 }
	$1 == "50%" { printf "wrk_p50_us=%.0f\n", us($2) }
	$1 == "99%" { printf "wrk_p99_us=%.0f\n", us($2) }
	/Non-2xx or 3xx responses:/ { e += $NF }
	/Socket errors:/ { for (i = 3; i <= NF; i++) e += $i + 0 }
	END { printf "wrk_errors=%d\n", e }' "$1"
}

if want admin && [ "${FERRY_BENCH_ADMIN:-1}" != 0 ] && command -v wrk >/dev/null 2>&1; then
	require_ferryd
	adm_started=$(date +%s)
	section "admin read path under load: $adm_hold idle devices, $adm_pairs pairs at" \
		"$adm_rate envelopes/s; no admin load, none again (noise), wrk on /v1/stats and /metrics (4" \
		"connections, one request each every $adm_delay ms), then saturating (-c32)," \
		"alternated $adm_runs times"
	gm=$("$bench" --free-port) && am=$("$bench" --free-port) || exit 1
	write_config "$tmp/m.ini" "$gm" "$am" "max_connections = $((adm_hold + 1000))"
	if start_ferryd "$tmp/m.ini" "$am" "$tmp/m.log"; then
		pid_m=$ferryd_pid
		echo "ferryd M (pid $pid_m, default workers): devices 127.0.0.1:$gm, admin 127.0.0.1:$am"
		printf 'function delay()\n\treturn %s\nend\n' "$adm_delay" >"$tmp/pace.lua"
		hdr="Authorization: Bearer $(cat "$tmp/admin.token")"
		# wrk stops when ferry-bench sends SIGINT after the phase; -d bounds it.
		wrk="exec nice -n 19 wrk -t1 -d$((${adm_dur%.*} + 30))s --latency -H '$hdr'"
		out=">$tmp/wrk.\$FERRY_BENCH_PHASE.\$FERRY_BENCH_RUN.out 2>&1"
		url="http://127.0.0.1:$am"
		count=$(awk -v r="$adm_rate" -v d="$adm_dur" -v p="$adm_pairs" \
			'BEGIN { printf "%d", r * d / p }')
		{
			"$bench" --server "127.0.0.1:$gm" --admin "$url" \
				--token-file "$tmp/admin.token" --pid "$pid_m" --label admin \
				--hold "$adm_hold" --senders "$adm_pairs" --window 8 --rate "$adm_rate" \
				--count "$count" --duration 30 --runs "$adm_runs" \
				--load "idle=exec sleep $((${adm_dur%.*} + 30))" \
				--load "stats=$wrk -c4 -s $tmp/pace.lua $url/v1/stats $out" \
				--load "metrics=$wrk -c4 -s $tmp/pace.lua $url/metrics $out" \
				--load "stats_sat=$wrk -c32 $url/v1/stats $out" \
				--load "metrics_sat=$wrk -c32 $url/metrics $out"
			echo $? >"$tmp/admin.rc"
		} | keep
		[ "$(cat "$tmp/admin.rc")" = 0 ] || note_failure "admin under load"
		# Envelopes stored (a DELIVER not acknowledged within ack_timeout) or
		# NACKed would not be online delivery: say so beside the figures.
		for k in stored nacks lost disconnects; do
			for p in "" idle $adm_phases; do
				v=$(get "admin${p:+_$p}.$k")
				[ -z "$v" ] || [ "$v" = 0 ] || echo "(admin: admin${p:+_$p}.$k=$v)"
			done
		done
		# wrk's figures per phase: medians over the runs.
		echo
		for p in $adm_phases; do
			for f in "$tmp"/wrk."$p".*.out; do
				[ -f "$f" ] && wrk_figs "$f" | sed "s/^/admin_$p./" >"$f.figs"
			done
			ls "$tmp"/wrk."$p".*.out.figs >/dev/null 2>&1 || continue
			medians "admin_$p" "$tmp"/wrk."$p".*.out.figs | grep -v wrk_errors | keep
			fig "admin_$p.wrk_errors" "$(cat "$tmp"/wrk."$p".*.out.figs |
				awk -F= '/wrk_errors/ { e += $2 } END { print e + 0 }')"
			[ "$(get "admin_$p.wrk_errors")" = 0 ] || note_failure "admin ($p: wrk errors)"
		done
		# ferryd's CPU per admin request, saturating: its extra cores over the
		# phase without load, over wrk's requests/s.
		for p in stats_sat metrics_sat; do
			b0=$(get admin.ferryd_busy) b1=$(get "admin_$p.ferryd_busy")
			rq=$(get "admin_$p.wrk_req_per_s")
			[ -n "$b0" ] && [ -n "$b1" ] && [ -n "$rq" ] && fig "admin_$p.ferryd_cpu_us_per_req" \
				"$(awk -v a="$b1" -v b="$b0" -v r="$rq" \
					'BEGIN { if (r > 0) printf "%.1f", (a - b) / r * 1e6 }')"
		done
		echo
		echo "-- medians over $adm_runs runs (message latencies: send -> DELIVER, us;" \
			"p99 x: against the phase without load)"
		printf '  %-22s %10s %9s %9s %8s %8s %8s %7s\n' phase "wrk req/s" "wrk p50" \
			"wrk p99" "msg p50" "msg p99" "p99 x" cores
		for p in "" idle $adm_phases; do
			l=admin${p:+_$p}
			printf '  %-22s %10s %9s %9s %8s %8s %8s %7s\n' "$l" \
				"$(get "$l.wrk_req_per_s")" "$(get "$l.wrk_p50_us")" \
				"$(get "$l.wrk_p99_us")" "$(get "$l.deliver_p50_us")" \
				"$(get "$l.deliver_p99_us")" "$(get "$l.deliver_p99_us_vs_base")" \
				"$(get "$l.ferryd_busy")"
		done
		stop_pid "$pid_m"
		echo "(admin: $(($(date +%s) - adm_started)) s)"
	else
		note_failure "admin (ferryd M)"
	fi
elif want admin; then
	section "admin read path under load: skipped (FERRY_BENCH_ADMIN=0, or wrk missing)"
fi

# ---- summary ----------------------------------------------------------------------

stop_pid "$pid_b"
stop_pid "$pid_a"
mkdir -p "$(dirname "$results")"
{
	echo "# ferry benchmark figures, $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
		"commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
		"$(nproc) cores"
	[ "$quick" = 1 ] && echo "# FERRY_BENCH_QUICK=1: fewer envelopes, not comparable to a full run"
	[ -n "$only" ] && echo "# FERRY_BENCH_ONLY=$only: these steps only"
	[ -n "$failed" ] && echo "# FAILED:$failed"
	cat "$figs"
} >"$results"

# The run's results as one JSON document, bench/results/DATE-COMMIT.json:
# the machine, then every scenario's JSON line, then every key=value figure
# (numbers as numbers). Not with FERRY_BENCH_ONLY or FERRY_BENCH_QUICK
# unless FERRY_BENCH_RESULTS=1: a partial run is no reference.
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
if { [ -z "$only" ] && [ "$quick" != 1 ]; } || [ "${FERRY_BENCH_RESULTS:-0}" = 1 ]; then
	mkdir -p "$top/bench/results"
	out="$top/bench/results/$(date -u +%Y-%m-%d)-$commit.json"
	{
		printf '{\n  "date": "%s",\n  "commit": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit"
		printf '  "quick": %s,\n  "only": "%s",\n  "failed": "%s",\n' \
			"$([ "$quick" = 1 ] && echo true || echo false)" "$only" "${failed# }"
		printf '  "machine": {"nproc": %s, "mem_total_kb": %s, "kernel": "%s", "cpu": "%s"},\n' \
			"$(nproc)" "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)" "$(uname -sr)" \
			"$(sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | head -n 1 | tr -d '"\\')"
		printf '  "results": [\n'
		sed 's/^/    /; $!s/$/,/' "$jsonl"
		printf '  ],\n  "figures": {\n'
		awk -F= 'NF >= 2 {
			k = $1; v = substr($0, length($1) + 2)
			if (v !~ /^-?[0-9]+(\.[0-9]+)?$/) { gsub(/["\\]/, "", v); v = "\"" v "\"" }
			printf "%s    \"%s\": %s", sep, k, v; sep = ",\n"
		} END { print "" }' "$figs"
		printf '  }\n}\n'
	} >"$out"
	echo "bench: results in ${out#"$top"/}"
fi

# row TEXT KEY...: one line of the summary, the figures separated by " / ";
# with FERRY_BENCH_ONLY, none for a line without any figure.
row() {
	text=$1 vals="" any=""
	shift
	for k in "$@"; do
		v=$(get "$k")
		any="$any$v"
		vals="$vals${vals:+ / }${v:--}"
	done
	[ -z "$only" ] || [ -n "$any" ] || return 0
	printf '  %-50s %16s\n' "$text" "$vals"
}

section "summary (every figure is also in build/bench/last-run.txt)"
row "DELIVER 100 B encode / decode (ns)" proto.deliver100.encode.ns proto.deliver100.decode.ns
row "DELIVER 4 KiB encode / decode (ns)" proto.deliver4k.encode.ns proto.deliver4k.decode.ns
row "SEND 100 B encode / decode (ns)" proto.send100.encode.ns proto.send100.decode.ns
row "DELIVER_ACK 64 ids encode / decode (ns)" proto.deliver_ack64.encode.ns \
	proto.deliver_ack64.decode.ns
row "DELIVER 100 B encode / decode (instructions)" proto.deliver100.encode.instructions \
	proto.deliver100.decode.instructions
row "latency: send -> DELIVER p50 / p99 (us)" latency.deliver_p50_us latency.deliver_p99_us
row "latency: send -> ACK p50 / p99 (us)" latency.ack_p50_us latency.ack_p99_us
row "latency: ferryd CPU per envelope (us)" latency.ferryd_cpu_us_per_env
row "throughput 100 B: envelopes acked/s" throughput.acked_per_s
row "throughput 100 B: ACK p50 / p99 (us)" throughput.ack_p50_us throughput.ack_p99_us
row "throughput 100 B: ferryd CPU per envelope (us)" throughput.ferryd_cpu_us_per_env
row "throughput 100 B: ferryd RSS growth per envelope (B)" throughput.ferryd_rss_bytes_per_env
row "pairs 100 x W4: envelopes/s (target >= 200,000)" pairs100.envelopes_per_s
row "pairs 100 x W4: end to end p50 / p99 / p999 (us)" pairs100.p50_us pairs100.p99_us \
	pairs100.p999_us
row "pairs 1000 x W1: envelopes/s (target >= 100,000)" pairs1000.envelopes_per_s
row "pairs 1000 x W1: end to end p50 / p99 (us)" pairs1000.p50_us pairs1000.p99_us
row "pairs: ferryd / generator CPU per env, 100 (us)" pairs100.cpu_us_per_envelope \
	pairs100.gen_cpu_us_per_envelope
row "pairs: ferryd / generator cores busy, 100" pairs100.ferryd_busy pairs100.gen_busy
row "pairs: ferryd / generator CPU per env, 1000 (us)" pairs1000.cpu_us_per_envelope \
	pairs1000.gen_cpu_us_per_envelope
row "paced at half: envelopes/s, e2e p99 (us, < 5000)" pairs100_half.envelopes_per_s \
	pairs100_half.p99_us
row "paced 100,000/s: envelopes/s, e2e p99 (us, < 5000)" pairs100_100k.envelopes_per_s \
	pairs100_100k.p99_us
row "fanout 100 users x 4: DELIVERs/s, e2e p99 (us)" fanout.envelopes_per_s fanout.p99_us
row "reconnect storm: devices back / all back (s)" storm.back storm.all_back_s
row "reconnect storm: peak accepts/s, lost" storm.peak_accepts_per_s storm.lost
row "wake pushes/s, ACK -> mock p50 / p99 (us)" wake.pushes_per_s wake.p50_us wake.p99_us
row "syscalls per envelope: ping-pong / under load" syscalls.pingpong.per_envelope \
	syscalls.load.per_envelope
row "writes per envelope: ping-pong / under load" syscalls.pingpong.write syscalls.load.write
row "syscalls per envelope: strace ping-pong" syscalls.strace.per_envelope
row "ferryd instructions per envelope (ping-pong)" ferryd.instructions_per_envelope
row "idle: connections / ferryd bytes per connection" idle.connections \
	idle.bytes_per_connection
row "idle: kernel slab bytes per socket" idle.kernel_bytes_per_socket
row "offline: envelopes stored/s / drained/s" offline.stored_per_s offline.drained_per_s
row "offline: send -> ACK stored p50 / p99 (us)" offline.store_ack_p50_us \
	offline.store_ack_p99_us
row "offline: store errors / drain errors" offline.store_errors offline.drain_errors
row "offline: ferryd / PG CPU per stored env (us)" \
	offline.store_ferryd_cpu_us_per_env offline.store_pg_cpu_us_per_env
row "offline: ferryd / PG CPU per drained env (us)" \
	offline.drain_ferryd_cpu_us_per_env offline.drain_pg_cpu_us_per_env
row "store: envelopes per batch / ms per batch" store.put_envelopes_per_batch \
	store.put_ms_per_batch
row "store: writers busy in ferry_put_batch (summed)" store.writer_busy
row "plain INSERT, same batch: rows/s" plain.rows_per_s
row "plain INSERT: PostgreSQL CPU per row (us)" plain.pg_cpu_us_per_row
row "offline stored/s / plain INSERT rows/s" offline.stored_vs_plain
row "receipts: messages/s batched / per message / none" receipts.msgs_per_s \
	receipts_each.msgs_per_s receipts_base.msgs_per_s
row "receipts: read ids in/s / RECEIPTs in/s (batched)" receipts.read_ids_in_per_s \
	receipts.receipts_in_per_s
row "receipts: read ids per RECEIPT in (batched)" receipts.ids_per_receipt_in
row "receipts: DELIVER_RECEIPTs out/s (batched)" receipts.frames_out_per_s
row "receipts: ids per frame delivered / read / all" receipts.ids_per_frame_delivered \
	receipts.ids_per_frame_read receipts.ids_per_frame
row "receipts: ids per frame, 100 pairs x W8 (>= 20)" receipts100.ids_per_frame
row "receipts 100 x W8: ferryd CPU/msg with / without" receipts100.ferryd_cpu_us_per_msg \
	receipts100_base.ferryd_cpu_us_per_msg
row "receipts 100 x W8: CPU overhead per message (%)" receipts100.cpu_overhead_pct
row "receipts: ids per stored row / ferryd batch" receipts.ids_per_stored_row \
	receipts.away_srv_ids_per_batch
row "receipts: ferryd CPU/msg batched / per msg / none" receipts.ferryd_cpu_us_per_msg \
	receipts_each.ferryd_cpu_us_per_msg receipts_base.ferryd_cpu_us_per_msg
row "receipts: CPU overhead batched / per msg (%, < 20)" receipts.cpu_overhead_pct \
	receipts_each.cpu_overhead_pct
row "APNs pushes/s ferry / h2load" push.ferry_per_s push.h2load_per_s
row "APNs ferry/h2load rate (target >= 0.5)" push.ratio
row "APNs client CPU/request ferry / h2load (us)" push.ferry_cpu_us_per_req \
	push.h2load_cpu_us_per_req
row "admin: devices held / pairs' envelopes/s" admin.held admin.acked_per_s
row "admin: msg p50 / p99, no admin load (us)" admin.deliver_p50_us admin.deliver_p99_us
row "admin: msg p99 x, /v1/stats / /metrics (<= 1.10)" admin_stats.deliver_p99_us_vs_base \
	admin_metrics.deliver_p99_us_vs_base
row "admin: msg p99 x, no load again (noise floor)" admin_idle.deliver_p99_us_vs_base
row "admin: wrk req/s /v1/stats / /metrics, 4 paced" admin_stats.wrk_req_per_s \
	admin_metrics.wrk_req_per_s
row "admin: wrk p50 / p99 /v1/stats, 4 paced (us)" admin_stats.wrk_p50_us \
	admin_stats.wrk_p99_us
row "admin: wrk p50 / p99 /metrics, 4 paced (us)" admin_metrics.wrk_p50_us \
	admin_metrics.wrk_p99_us
row "admin -c32: wrk req/s /v1/stats / /metrics" admin_stats_sat.wrk_req_per_s \
	admin_metrics_sat.wrk_req_per_s
row "admin -c32: wrk p99 /v1/stats / /metrics (us)" admin_stats_sat.wrk_p99_us \
	admin_metrics_sat.wrk_p99_us
row "admin -c32: msg p99 x, /v1/stats / /metrics" admin_stats_sat.deliver_p99_us_vs_base \
	admin_metrics_sat.deliver_p99_us_vs_base
row "admin -c32: ferryd CPU/req /v1/stats / /metrics (us)" \
	admin_stats_sat.ferryd_cpu_us_per_req admin_metrics_sat.ferryd_cpu_us_per_req
row "admin: ferryd cores none / stats / metrics" admin.ferryd_busy admin_stats.ferryd_busy \
	admin_metrics.ferryd_busy
row "admin: ferryd cores -c32 stats / metrics" admin_stats_sat.ferryd_busy \
	admin_metrics_sat.ferryd_busy
echo
echo "bench: done in $(($(date +%s) - started)) s"
if [ -n "$failed" ]; then
	echo "bench: failed:$failed" >&2
	exit 1
fi
