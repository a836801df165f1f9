#!/usr/bin/env bash
# A shared-store cluster for ebsd on loopback: PostgreSQL 15 from Debian (the catalog)
# and a real S3-compatible server (the blocks), with their data and logs under DIR.
#
#   scripts/cluster.sh up DIR          start both (idempotent) and print the exports
#   scripts/cluster.sh env DIR         print the exports of a cluster that is up
#   scripts/cluster.sh status DIR      say what runs; exit 1 unless both answer
#   scripts/cluster.sh restart-s3 DIR [--kill]   stop (SIGTERM, or SIGKILL) and start the S3 server
#   scripts/cluster.sh restart-pg DIR [--kill]   stop (fast, or immediate) and start PostgreSQL
#   scripts/cluster.sh stop-s3|start-s3|stop-pg|start-pg DIR   one server down (an outage) and up again
#   scripts/cluster.sh down DIR        stop both; the data stays under DIR
#   scripts/cluster.sh purge DIR       down, then remove DIR
#   scripts/cluster.sh deps            install what is missing, nothing else
#
# `eval "$(scripts/cluster.sh up DIR)"` in a second shell sets EBSD_CATALOG (postgres
# URL), EBSD_BLOCKS (s3://BUCKET/PREFIX) and the S3 client's AWS_ENDPOINT_URL_S3,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION; every cluster gets its own
# generated credentials. Ports are free loopback ports, picked under a machine-wide
# lock and kept in DIR/ports so that restarts keep the endpoints. Everything the script
# says besides the exports goes to stderr.
#
# The S3 server is versitygw (github.com/versity/versitygw, Apache-2.0) on its POSIX
# backend, built from the Go module proxy at a pinned version into a cache
# ($EBSD_CLUSTER_CACHE, default ~/.cache/ebsd-cluster) the first time it is needed.
# PostgreSQL runs as the `postgres` user when the script runs as root (initdb refuses
# root), and as the calling user otherwise.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
PG_MAJOR=15
BUCKET=ebsd
PREFIX=blocks
REGION=us-east-1
CACHE="${EBSD_CLUSTER_CACHE:-${HOME:-/root}/.cache/ebsd-cluster}"
S3_BIN="$CACHE/versitygw-$VERSITYGW_VERSION"
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
AWS=/usr/bin/aws
# Bounded waits, in tenths of a second.
READY_TENTHS=${EBSD_CLUSTER_READY_TENTHS:-300}
STOP_TENTHS=${EBSD_CLUSTER_STOP_TENTHS:-150}

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# --- installs, each only when missing ----------------------------------------------

apt_install() {
	say "installing from Debian: $*"
	$SUDO apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

deps() {
	local missing=""
	[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || missing="$missing postgresql-$PG_MAJOR"
	command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1 || missing="$missing postgresql-client-$PG_MAJOR"
	[ -x "$AWS" ] || missing="$missing awscli"
	command -v flock >/dev/null 2>&1 && command -v runuser >/dev/null 2>&1 || missing="$missing util-linux"
	command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
	if [ -n "$missing" ]; then apt_install $missing; fi
	if [ ! -x "$S3_BIN" ]; then
		command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || die "go is needed to build versitygw"
		local gobin=go
		command -v go >/dev/null 2>&1 || gobin=/usr/local/go/bin/go
		say "building versitygw $VERSITYGW_VERSION from the Go module proxy into $CACHE (once per machine, about 3 CPU-minutes)"
		mkdir -p "$CACHE"
		local tmp
		tmp=$(mktemp -d "$CACHE/build.XXXXXX")
		# GOFLAGS is cleared so that a caller's -mod or -race cannot change the build.
		if ! GOBIN="$tmp" GOFLAGS=-trimpath "$gobin" install -ldflags='-s -w' \
			"github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2; then
			rm -rf "$tmp"
			die "building versitygw failed"
		fi
		mv "$tmp/versitygw" "$S3_BIN"
		rm -rf "$tmp"
	fi
}

# --- ports -------------------------------------------------------------------------

# port_busy PORT: some TCP socket (any state, IPv4 or IPv6) holds the port locally.
port_busy() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v h="$hex" 'NR > 1 { split($2, a, ":"); if (a[2] == h) { found = 1; exit } } END { exit !found }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pick_port: a port in 20000-32767 (below Linux's ephemeral range, so that no
# outgoing connection takes it meanwhile) that nothing holds and no other cluster has
# recorded. Called under the machine-wide lock; the server's own bind is the final word.
pick_port() {
	local i p
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
		port_busy "$p" && continue
		grep -qs "=$p\$" "$PORT_REGISTRY" && continue
		echo "$p"
		return 0
	done
	die "no free loopback port found in 200 tries"
}

PORT_REGISTRY=/tmp/ebsd-cluster-ports
GLOBAL_LOCK=/tmp/ebsd-cluster.lock

# --- state under DIR -----------------------------------------------------------------

setup_dir() {
	[ -n "${1:-}" ] || usage
	mkdir -p "$1"
	DIR=$(cd "$1" && pwd -P)
	STATE="$DIR/state"
	mkdir -p "$STATE"
	chmod 700 "$STATE"
}

load_state() {
	# shellcheck disable=SC1091
	[ -f "$STATE/cluster.env" ] && . "$STATE/cluster.env"
	return 0
}

random_hex() { openssl rand -hex "$1"; }

# First `up` of a DIR: ports and credentials, kept for every later command.
init_state() {
	[ -f "$STATE/cluster.env" ] && return 0
	local pg_port s3_port
	pg_port=$(pick_port)
	s3_port=$(pick_port)
	while [ "$s3_port" = "$pg_port" ]; do s3_port=$(pick_port); done
	cat >"$STATE/cluster.env.tmp" <<EOF
PG_PORT=$pg_port
S3_PORT=$s3_port
PG_PASSWORD=$(random_hex 16)
S3_ACCESS_KEY=EBSD$(random_hex 8 | tr a-f A-F)
S3_SECRET_KEY=$(random_hex 20)
EOF
	mv "$STATE/cluster.env.tmp" "$STATE/cluster.env"
	echo "$DIR=$pg_port" >>"$PORT_REGISTRY"
	echo "$DIR=$s3_port" >>"$PORT_REGISTRY"
}

exports() {
	cat <<EOF
export EBSD_CATALOG='postgres://ebsd:$PG_PASSWORD@127.0.0.1:$PG_PORT/ebsd?sslmode=disable'
export EBSD_BLOCKS='s3://$BUCKET/$PREFIX'
export AWS_ENDPOINT_URL_S3='http://127.0.0.1:$S3_PORT'
export AWS_ACCESS_KEY_ID='$S3_ACCESS_KEY'
export AWS_SECRET_ACCESS_KEY='$S3_SECRET_KEY'
export AWS_REGION='$REGION'
export AWS_EC2_METADATA_DISABLED=true
EOF
}

# --- PostgreSQL ----------------------------------------------------------------------

# pg_run CMD...: run as the PostgreSQL owner (postgres when we are root).
pg_run() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# PGDIR is DIR/pg, or, when the postgres user cannot reach DIR (a private temporary
# directory, say), a directory of its own under /tmp that DIR/pg links to; the server
# sees it by its real path. Its log is PGDIR/postgresql.log, linked from DIR/logs.
pg_paths() {
	PGDIR=$(readlink -f "$DIR/pg" 2>/dev/null || echo "$DIR/pg")
	PGDATA="$PGDIR/data"
	PGLOG="$PGDIR/postgresql.log"
	PGSOCK="$PGDIR/run"
}

pg_prepare() {
	pg_paths
	mkdir -p "$DIR/logs"
	if [ ! -e "$PGDIR" ]; then
		if [ "$(id -u)" = 0 ]; then
			id postgres >/dev/null 2>&1 || die "no postgres user (package postgresql-$PG_MAJOR makes it)"
			if runuser -u postgres -- test -x "$DIR"; then
				mkdir -p "$PGDIR"
			else
				local side
				side=$(mktemp -d /tmp/ebsd-cluster-pg.XXXXXX)
				ln -s "$side" "$PGDIR"
				say "postgres cannot enter $DIR: its data is in $side (DIR/pg links there)"
			fi
			chown postgres: "$PGDIR/"
		else
			mkdir -p "$PGDIR"
		fi
		chmod 700 "$PGDIR/"
	fi
	pg_paths
	ln -sfn "$PGLOG" "$DIR/logs/postgresql.log"
	if [ ! -f "$PGDATA/PG_VERSION" ]; then
		local pw="$PGDIR/.pw"
		pg_run mkdir -p "$PGSOCK"
		printf '%s\n' "$PG_PASSWORD" >"$pw.tmp"
		[ "$(id -u)" = 0 ] && chown postgres: "$pw.tmp"
		chmod 600 "$pw.tmp"
		mv "$pw.tmp" "$pw"
		say "initdb $PGDATA"
		pg_run "$PG_BIN/initdb" -D "$PGDATA" -U ebsd --pwfile="$pw" -E UTF8 --no-locale \
			--auth-host=scram-sha-256 --auth-local=trust >"$DIR/logs/initdb.log" 2>&1 ||
			{ tail -20 "$DIR/logs/initdb.log" >&2; die "initdb failed"; }
		rm -f "$pw"
		# Loopback only; the Unix socket is in a private directory.
		pg_run sh -c "cat >>'$PGDATA/postgresql.conf'" <<EOF

# scripts/cluster.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
max_connections = 200
EOF
	fi
}

pg_alive() {
	pg_paths
	[ -f "$PGDATA/postmaster.pid" ] && pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U ebsd -t 2 >/dev/null 2>&1; }

pg_start() {
	pg_prepare
	if pg_alive; then
		return 0
	fi
	say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
	# The server must not inherit the lock descriptors (8, 9): it would hold the locks.
	if ! pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t $((READY_TENTHS / 10)) start >/dev/null 8>&- 9>&-; then
		tail -20 "$PGLOG" >&2
		die "PostgreSQL did not start (log: $PGLOG)"
	fi
	local i
	for i in $(seq 1 "$READY_TENTHS"); do
		pg_ready && break
		sleep 0.1
	done
	pg_ready || die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"
	if ! PGPASSWORD=$PG_PASSWORD psql -qAt -h 127.0.0.1 -p "$PG_PORT" -U ebsd -d postgres \
		-c "SELECT 1 FROM pg_database WHERE datname = 'ebsd'" | grep -q 1; then
		PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U ebsd -d postgres \
			-c 'CREATE DATABASE ebsd' >&2
	fi
}

# pg_stop [fast|immediate]
pg_stop() {
	pg_paths
	[ -f "$PGDATA/PG_VERSION" ] || return 0
	if pg_alive; then
		say "stopping PostgreSQL (${1:-fast})"
		pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" -m "${1:-fast}" -w -t $((STOP_TENTHS / 10)) stop >/dev/null ||
			die "PostgreSQL did not stop"
	fi
}

# --- the S3 server (versitygw, POSIX backend) ---------------------------------------

s3_paths() {
	S3ROOT="$DIR/s3/data"
	S3SIDE="$DIR/s3/meta"
	S3LOG="$DIR/logs/s3.log"
	S3PID="$STATE/s3.pid"
}

s3_pid() {
	s3_paths
	local pid
	pid=$(cat "$S3PID" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	# The pid is ours only while it runs our binary (pids are reused).
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$S3_BIN")" ] || return 1
	echo "$pid"
}

s3_alive() { s3_pid >/dev/null; }

# A TCP connect: cheap enough to poll (the AWS CLI takes a second to start).
s3_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; }

aws_cli() {
	AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_REGION=$REGION \
		AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER="" \
		AWS_EC2_METADATA_DISABLED=true \
		"$AWS" --endpoint-url "http://127.0.0.1:$S3_PORT" "$@"
}

s3_start() {
	s3_paths
	if s3_alive; then
		return 0
	fi
	mkdir -p "$S3ROOT" "$DIR/logs"
	chmod 700 "$DIR/s3"
	local meta=()
	[ -f "$STATE/s3-sidecar" ] && meta=(--sidecar "$S3SIDE")
	say "starting versitygw on 127.0.0.1:$S3_PORT (data $S3ROOT)"
	local attempt pid i
	for attempt in 1 2; do
		echo "--- start $(date -u +%FT%TZ)" >>"$S3LOG"
		# Credentials through the environment, not the command line that ps shows.
		ROOT_ACCESS_KEY_ID=$S3_ACCESS_KEY ROOT_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
			setsid "$S3_BIN" --port "127.0.0.1:$S3_PORT" --region "$REGION" \
			posix "${meta[@]}" "$S3ROOT" </dev/null >>"$S3LOG" 2>&1 8>&- 9>&- &
		pid=$!
		echo "$pid" >"$S3PID"
		for i in $(seq 1 "$READY_TENTHS"); do
			s3_listening && break
			[ -d "/proc/$pid" ] || break
			sleep 0.1
		done
		if s3_listening && s3_alive; then
			return 0
		fi
		# A file system without user xattrs: keep the metadata in a sidecar directory.
		if [ "$attempt" = 1 ] && ! [ -d "/proc/$pid" ] && grep -q 'xattr check failed' "$S3LOG"; then
			say "no user xattrs under $S3ROOT: metadata goes to $S3SIDE"
			mkdir -p "$S3SIDE"
			touch "$STATE/s3-sidecar"
			meta=(--sidecar "$S3SIDE")
			continue
		fi
		break
	done
	tail -20 "$S3LOG" >&2
	s3_stop KILL
	die "versitygw did not start (log: $S3LOG)"
}

# s3_stop [TERM|KILL]
s3_stop() {
	local pid i
	s3_paths
	pid=$(s3_pid) || { rm -f "$S3PID"; return 0; }
	say "stopping versitygw (SIG${1:-TERM})"
	kill -"${1:-TERM}" "$pid" 2>/dev/null || true
	for i in $(seq 1 "$STOP_TENTHS"); do
		[ -d "/proc/$pid" ] || break
		sleep 0.1
	done
	if [ -d "/proc/$pid" ]; then
		say "versitygw still runs after SIG${1:-TERM}: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do
			[ -d "/proc/$pid" ] || break
			sleep 0.1
		done
	fi
	[ -d "/proc/$pid" ] && die "versitygw (pid $pid) does not stop"
	rm -f "$S3PID"
}

# The bucket, made with the AWS CLI once; a signed HEAD proves the credentials.
s3_bucket() {
	if [ ! -f "$STATE/bucket" ]; then
		say "creating bucket $BUCKET"
		local out
		if ! out=$(aws_cli s3api create-bucket --bucket "$BUCKET" 2>&1) &&
			! grep -q BucketAlreadyOwnedByYou <<<"$out"; then
			echo "$out" >&2
			die "cannot create bucket $BUCKET"
		fi
		touch "$STATE/bucket"
	fi
	aws_cli s3api head-bucket --bucket "$BUCKET" >/dev/null || die "bucket $BUCKET does not answer"
}

# --- commands --------------------------------------------------------------------------

lock_dir() {
	exec 9>"$STATE/lock"
	flock -w 300 9 || die "another cluster.sh holds $DIR"
}

lock_machine() {
	exec 8>"$GLOBAL_LOCK"
	flock -w 300 8 || die "another cluster.sh holds $GLOBAL_LOCK"
	# Forget the ports of clusters whose DIR is gone.
	if [ -f "$PORT_REGISTRY" ]; then
		local line d
		: >"$PORT_REGISTRY.tmp"
		while IFS= read -r line; do
			d=${line%=*}
			[ -f "$d/state/cluster.env" ] && echo "$line" >>"$PORT_REGISTRY.tmp"
		done <"$PORT_REGISTRY"
		mv "$PORT_REGISTRY.tmp" "$PORT_REGISTRY"
	fi
}

cmd_up() {
	deps
	setup_dir "$1"
	lock_dir
	load_state
	if [ -f "$STATE/cluster.env" ] && pg_alive && s3_alive && s3_listening && pg_ready && [ -f "$STATE/bucket" ]; then
		say "already up under $DIR"
		exports
		return 0
	fi
	lock_machine
	init_state
	load_state
	local t0=$SECONDS
	pg_start
	s3_start
	s3_bucket
	exports >"$STATE/exports"
	say "up under $DIR in $((SECONDS - t0)) s: PostgreSQL 127.0.0.1:$PG_PORT, S3 http://127.0.0.1:$S3_PORT bucket $BUCKET"
	exports
}

need_state() {
	[ -f "$1/state/cluster.env" ] || die "no cluster under $1 (run: $0 up $1)"
	setup_dir "$1"
	[ -f "$STATE/cluster.env" ] || die "no cluster under $DIR (run: $0 up $DIR)"
	load_state
}

cmd_env() {
	need_state "$1"
	exports
}

cmd_status() {
	need_state "$1"
	local rc=0
	if pg_alive && pg_ready; then say "PostgreSQL up on 127.0.0.1:$PG_PORT"; else say "PostgreSQL down"; rc=1; fi
	if s3_alive && s3_listening; then say "versitygw up on 127.0.0.1:$S3_PORT (pid $(s3_pid))"; else say "versitygw down"; rc=1; fi
	return $rc
}

cmd_restart_s3() {
	need_state "$1"
	lock_dir
	if [ "${2:-}" = --kill ]; then s3_stop KILL; else s3_stop TERM; fi
	s3_start
	aws_cli s3api head-bucket --bucket "$BUCKET" >/dev/null || die "bucket $BUCKET does not answer after the restart"
	say "versitygw restarted"
}

cmd_restart_pg() {
	need_state "$1"
	lock_dir
	if [ "${2:-}" = --kill ]; then pg_stop immediate; else pg_stop fast; fi
	pg_start
	say "PostgreSQL restarted"
}

cmd_stop_s3() { need_state "$1"; lock_dir; s3_stop TERM; say "versitygw stopped"; }
cmd_start_s3() {
	need_state "$1"
	lock_dir
	s3_start
	aws_cli s3api head-bucket --bucket "$BUCKET" >/dev/null || die "bucket $BUCKET does not answer after the start"
	say "versitygw started"
}
cmd_stop_pg() { need_state "$1"; lock_dir; pg_stop fast; say "PostgreSQL stopped"; }
cmd_start_pg() { need_state "$1"; lock_dir; pg_start; say "PostgreSQL started"; }

cmd_down() {
	[ -f "$1/state/cluster.env" ] || { say "no cluster under $1"; return 0; }
	setup_dir "$1"
	lock_dir
	load_state
	s3_paths
	s3_stop TERM
	pg_stop fast
	say "down under $DIR (data kept)"
}

cmd_purge() {
	[ -d "$1" ] || return 0
	cmd_down "$1"
	DIR=$(cd "$1" && pwd -P)
	# Only a cluster's directory (or an empty one) is removed.
	if [ ! -d "$DIR/state" ] && [ -n "$(ls -A "$DIR")" ]; then
		die "$DIR is not a cluster directory: not removed"
	fi
	local side
	side=$(readlink "$DIR/pg" 2>/dev/null || true)
	case "$side" in /tmp/ebsd-cluster-pg.*) rm -rf "$side" ;; esac
	rm -rf "$DIR"
	lock_machine # forgets DIR's ports
	say "removed $DIR"
}

case "${1:-}" in
up) [ $# = 2 ] || usage; cmd_up "$2" ;;
env) [ $# = 2 ] || usage; cmd_env "$2" ;;
status) [ $# = 2 ] || usage; cmd_status "$2" ;;
restart-s3) [ $# -ge 2 ] || usage; cmd_restart_s3 "$2" "${3:-}" ;;
restart-pg) [ $# -ge 2 ] || usage; cmd_restart_pg "$2" "${3:-}" ;;
stop-s3) [ $# = 2 ] || usage; cmd_stop_s3 "$2" ;;
start-s3) [ $# = 2 ] || usage; cmd_start_s3 "$2" ;;
stop-pg) [ $# = 2 ] || usage; cmd_stop_pg "$2" ;;
start-pg) [ $# = 2 ] || usage; cmd_start_pg "$2" ;;
down) [ $# = 2 ] || usage; cmd_down "$2" ;;
purge) [ $# = 2 ] || usage; cmd_purge "$2" ;;
deps) deps ;;
*) usage ;;
esac
