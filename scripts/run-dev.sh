#!/bin/sh
# run-dev.sh: `make run`, ferry on the embedded default.
#
# Keeps everything under var/ in the source tree: a private PostgreSQL cluster
# (var/pgdata, socket in var/run, no TCP port), a development config
# (var/ferry.ini) and the admin token (var/admin.token). The first run creates
# them; later runs reuse them and their data. ferryd runs in the foreground;
# Ctrl-C stops it and then the cluster.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/pg.sh"

var="$top/var"
data="$var/pgdata"
sock="$var/run"
cfg="$var/ferry.ini"
tokfile="$var/admin.token"
db=ferry

mkdir -p "$var"
chmod 755 "$var"

if [ ${#sock} -gt 90 ]; then
	echo "run: '$sock' is too long for a unix socket path; move the tree" >&2
	exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
	pg_ensure_user
	if ! runuser -u postgres -- test -x "$var"; then
		echo "run: user postgres cannot reach '$var'; make its parent directories" \
			"world-searchable (chmod o+x) or move the tree" >&2
		exit 1
	fi
fi

if [ ! -f "$data/PG_VERSION" ]; then
	echo "run: creating a PostgreSQL cluster in $data"
	rm -rf "$data"
	pg_init "$data"
fi

# A cluster left running by an earlier run (killed hard) is stopped first.
pg_stop "$data"
pg_start "$data" "$sock"

stop_all() {
	trap - EXIT INT TERM
	if [ -n "${ferryd_pid:-}" ]; then
		kill -TERM "$ferryd_pid" 2>/dev/null || true
		wait "$ferryd_pid" 2>/dev/null || true
	fi
	pg_stop "$data"
	echo "run: stopped ferryd and PostgreSQL"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

pg_createdb "$sock" "$db"

if [ ! -s "$tokfile" ]; then
	(umask 077 && head -c 32 /dev/urandom | base64 | tr -d '=+/\n' > "$tokfile")
fi
# ferryd refuses a token file that others can read; an older tree may have one.
chmod 600 "$tokfile"
if [ ! -f "$cfg" ]; then
	cat > "$cfg" <<EOT
# Development configuration written by 'make run'. Edit freely; it is kept.
[gateway]
listen = 127.0.0.1:7222

[store]
conninfo = "host=$sock dbname=$db user=$(pg_owner)"

[admin]
listen = 127.0.0.1:7280
token_file = $tokfile

[log]
level = info
EOT
fi

"$top/bin/ferryd" migrate -c "$cfg"

# The listen keys of [gateway] and [admin] as written in the config.
conf_get() {
	awk -v sect="[$1]" -v key="$2" '
		/^\[/ { in_s = ($0 == sect) }
		in_s && $1 == key && $2 == "=" { print $3; exit }' "$cfg"
}
admin=$(conf_get admin listen)
devices=$(conf_get gateway listen)
: "${admin:=127.0.0.1:7280}"
: "${devices:=0.0.0.0:7222}"
cat <<EOT

ferry is starting (Ctrl-C stops it and PostgreSQL)
  devices:     $devices (plain TCP; docs/protocol.md)
  admin API:   http://$admin
  dashboard:   http://$admin/ui
  admin token: $(cat "$tokfile")
  config:      $cfg
  database:    $data (socket in $sock)

  try: curl -s -X POST -H "Authorization: Bearer \$(cat $tokfile)" \\
         -d '{"platform":"ios"}' http://$admin/v1/users/alice/devices

EOT

"$top/bin/ferryd" run -c "$cfg" &
ferryd_pid=$!
status=0
wait "$ferryd_pid" || status=$?
ferryd_pid=
exit "$status"
