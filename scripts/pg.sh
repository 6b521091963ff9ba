#!/bin/sh
# pg.sh: start and stop private PostgreSQL clusters (sourced, not run).
#
# A cluster here listens on a unix socket only (listen_addresses = ''), in a
# directory of its own, so clusters never collide on a TCP port and never
# touch a system-wide server. PostgreSQL refuses to run as root; as root the
# cluster belongs to the `postgres` user (created if absent).

pg_bindir() {
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
		echo "pg: no PostgreSQL server binaries under /usr/lib/postgresql" >&2
		return 1
	fi
	echo "$d"
}

# pg_as CMD...: run CMD as the cluster owner.
pg_as() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_owner() {
	if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

pg_ensure_user() {
	[ "$(id -u)" -eq 0 ] || return 0
	id postgres >/dev/null 2>&1 && return 0
	useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
}

# pg_init DATADIR: create a cluster (trust auth: it is reachable only through
# a socket in a directory of its own).
pg_init() {
	bindir=$(pg_bindir) || return 1
	pg_ensure_user
	mkdir -p "$1"
	if [ "$(id -u)" -eq 0 ]; then chown postgres "$1"; fi
	chmod 700 "$1"
	pg_as "$bindir/initdb" -D "$1" -A trust -U "$(pg_owner)" -E UTF8 --locale=C.UTF-8 \
		>"$1.initdb.log" 2>&1 || {
		cat "$1.initdb.log" >&2
		return 1
	}
}

# pg_start DATADIR SOCKDIR [extra postgres options]
pg_start() {
	bindir=$(pg_bindir) || return 1
	data=$1 sock=$2
	shift 2
	mkdir -p "$sock"
	if [ "$(id -u)" -eq 0 ]; then chown postgres "$sock"; fi
	pg_as "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
		-o "-k $sock -c listen_addresses= $*" start >/dev/null || {
		cat "$data/server.log" >&2
		return 1
	}
}

pg_stop() {
	bindir=$(pg_bindir) || return 1
	pg_as "$bindir/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
}

# pg_createdb SOCKDIR NAME: create database NAME unless it exists.
pg_createdb() {
	if ! psql -h "$1" -U "$(pg_owner)" -d postgres -Atqc \
		"SELECT 1 FROM pg_database WHERE datname = '$2'" | grep -q 1; then
		psql -h "$1" -U "$(pg_owner)" -d postgres -qc "CREATE DATABASE \"$2\"" >/dev/null
	fi
}
