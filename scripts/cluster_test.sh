#!/usr/bin/env bash
# Test of scripts/cluster.sh: two clusters brought up at once on distinct loopback ports;
# a second shell that evals the printed exports reaches PostgreSQL with psql through
# EBSD_CATALOG and round-trips an object through the bucket with the AWS CLI; `up`
# again prints the same exports; the S3 server and PostgreSQL are restarted (gently and
# by a kill) and keep what they had; `down` leaves nothing running or listening, and a
# later `up` finds the data again. Ends with an 'N passed, N failed' line.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="$PWD/scripts/cluster.sh"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
bad() { failed=$((failed + 1)); echo "not ok - $*"; }
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}

# A private DIR (0700, as mktemp and Go's t.TempDir make it: postgres cannot enter it)
# and a public one.
DIR=$(mktemp -d /tmp/ebsd-cluster-test.XXXXXX)
DIR2=$(mktemp -d /tmp/ebsd-cluster-test2.XXXXXX)
chmod 755 "$DIR2"
WORK=$(mktemp -d)
cleanup() {
	"$CLUSTER" purge "$DIR" >/dev/null 2>&1 || true
	"$CLUSTER" purge "$DIR2" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# Builds versitygw and installs packages if missing, outside the timed part.
"$CLUSTER" deps

# in_shell EXPORTS CMD: run CMD in a clean second shell that evals EXPORTS.
in_shell() {
	local exports=$1
	shift
	env -i PATH="$PATH" HOME="$WORK" bash -c "set -euo pipefail; eval \"\$1\"; shift; $*" _ "$exports"
}

t0=$SECONDS
"$CLUSTER" up "$DIR" >"$WORK/exports1" 2>"$WORK/up1.log" &
up1=$!
"$CLUSTER" up "$DIR2" >"$WORK/exports2" 2>"$WORK/up2.log" &
up2=$!
rc1=0 rc2=0
wait $up1 || rc1=$?
wait $up2 || rc2=$?
cat "$WORK/up1.log" "$WORK/up2.log"
check "two clusters up at once ($((SECONDS - t0)) s)" test "$rc1" = 0 -a "$rc2" = 0
[ "$rc1" = 0 ] && [ "$rc2" = 0 ] || { echo "$passed passed, $((failed + 1)) failed"; exit 1; }
E1=$(cat "$WORK/exports1")
E2=$(cat "$WORK/exports2")

for v in EBSD_CATALOG EBSD_BLOCKS AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION; do
	check "up prints export $v" grep -q "^export $v=" "$WORK/exports1"
done
check "EBSD_BLOCKS is s3://BUCKET/PREFIX" in_shell "$E1" '[[ $EBSD_BLOCKS =~ ^s3://[a-z0-9.-]+/.+ ]]'
check "EBSD_CATALOG is a postgres URL on loopback" in_shell "$E1" '[[ $EBSD_CATALOG =~ ^postgres://[^@]+@127\.0\.0\.1:[0-9]+/ ]]'
ports() { in_shell "$1" 'echo "${EBSD_CATALOG#*@127.0.0.1:}" | cut -d/ -f1; echo "${AWS_ENDPOINT_URL_S3##*:}"'; }
P1=$(ports "$E1" | tr '\n' ' ')
P2=$(ports "$E2" | tr '\n' ' ')
check "the two clusters have distinct ports ($P1/ $P2)" test -z "$(echo $P1 $P2 | tr ' ' '\n' | sort | uniq -d)"
check "the two clusters have distinct credentials" test "$(in_shell "$E1" 'echo $AWS_SECRET_ACCESS_KEY')" != "$(in_shell "$E2" 'echo $AWS_SECRET_ACCESS_KEY')"

listening_on() { ss -Htln "sport = :$1" | grep -q .; }
only_loopback() { ! ss -Htln "sport = :$1" | awk '{print $4}' | grep -vq '^127\.0\.0\.1:'; }
for p in $P1 $P2; do
	check "port $p listens on 127.0.0.1 only" eval 'listening_on "$p" && only_loopback "$p"'
done

SQL='psql -v ON_ERROR_STOP=1 -qAtX "$EBSD_CATALOG"'
check "psql connects with EBSD_CATALOG" in_shell "$E1" "[ \"\$($SQL -c 'SELECT current_user || current_database()')\" = ebsdebsd ]"
check "psql writes a table" in_shell "$E1" "$SQL -c 'CREATE TABLE t (x int); INSERT INTO t VALUES (42)'"
check "a wrong password is refused" in_shell "$E1" "! PGCONNECT_TIMEOUT=5 psql -qAtX \"\${EBSD_CATALOG/:*@/:wrong@}\" -c 'SELECT 1' 2>/dev/null"

head -c 3000000 /dev/urandom >"$WORK/obj"
head -c 100 /dev/urandom >"$WORK/obj2"
AWS='aws --endpoint-url "$AWS_ENDPOINT_URL_S3"'
KEY='${EBSD_BLOCKS}/test/obj'
put() { in_shell "$1" "$AWS s3 cp --only-show-errors \"$2\" \"$3\""; }
get_same() { in_shell "$1" "$AWS s3 cp --only-show-errors \"$2\" \"$WORK/back\"" && cmp -s "$3" "$WORK/back"; }
check "aws s3 cp puts an object into the bucket" put "$E1" "$WORK/obj" "$KEY"
check "aws s3 cp gets the same bytes back" get_same "$E1" "$KEY" "$WORK/obj"
check "a wrong secret key is refused" in_shell "$E1" "! AWS_SECRET_ACCESS_KEY=wrong $AWS s3 ls \"\$EBSD_BLOCKS/\" >/dev/null 2>&1"
check "the other cluster does not have the object" in_shell "$E2" "! $AWS s3api head-object --bucket \"\$(echo \${EBSD_BLOCKS#s3://} | cut -d/ -f1)\" --key \"\${EBSD_BLOCKS#s3://*/}/test/obj\" >/dev/null 2>&1"

t0=$SECONDS
again=$("$CLUSTER" up "$DIR" 2>/dev/null)
check "up again prints the same exports ($((SECONDS - t0)) s)" test "$again" = "$E1"
check "env prints the same exports" test "$("$CLUSTER" env "$DIR" 2>/dev/null)" = "$E1"
check "status says both are up" "$CLUSTER" status "$DIR"

s3pid() { cat "$DIR/state/s3.pid"; }
pgpid() { head -1 "$DIR/pg/data/postmaster.pid"; }
for how in "" --kill; do
	before=$(s3pid)
	check "restart-s3 $how" "$CLUSTER" restart-s3 "$DIR" $how
	check "restart-s3 $how: a new process" test "$(s3pid)" != "$before"
	check "restart-s3 $how: same endpoint, the object is still there" get_same "$E1" "$KEY" "$WORK/obj"
	check "restart-s3 $how: puts work" put "$E1" "$WORK/obj2" "${KEY}2"
	before=$(pgpid)
	check "restart-pg $how" "$CLUSTER" restart-pg "$DIR" $how
	check "restart-pg $how: a new postmaster" test "$(pgpid)" != "$before"
	check "restart-pg $how: the committed row is still there" in_shell "$E1" "[ \"\$($SQL -c 'SELECT x FROM t')\" = 42 ]"
done

# procs PID...: "pid:cmdline" of each, to tell our process from a later one that got
# its pid (other work on the machine makes pids wrap quickly).
procs() {
	local pid
	for pid in "$@"; do echo "$pid:$(tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null | tr -d ' ')"; done
}
gone() { [ "$(procs "${1%%:*}")" != "$1" ]; }
pids=$(procs $(cat "$DIR/state/s3.pid" "$DIR2/state/s3.pid"; head -qn1 "$DIR/pg/data/postmaster.pid" "$DIR2/pg/data/postmaster.pid"))
check "down" "$CLUSTER" down "$DIR"
check "down (second cluster)" "$CLUSTER" down "$DIR2"
for p in $P1 $P2; do
	check "nothing listens on $p after down" eval '! listening_on "$p"'
done
for pid in $pids; do
	check "process ${pid%%:*} (${pid#*:}) is gone after down" gone "$pid"
done
check "status says down" eval '! "$CLUSTER" status "$DIR" 2>/dev/null'
check "down again is a no-op" "$CLUSTER" down "$DIR"

check "up after down" "$CLUSTER" up "$DIR" >/dev/null
check "up after down: same exports" test "$("$CLUSTER" env "$DIR" 2>/dev/null)" = "$E1"
check "up after down: the object is still there" get_same "$E1" "${KEY}2" "$WORK/obj2"
check "up after down: the row is still there" in_shell "$E1" "[ \"\$($SQL -c 'SELECT x FROM t')\" = 42 ]"
pids=$(procs $(cat "$DIR/state/s3.pid"; head -1 "$DIR/pg/data/postmaster.pid"))
side=$(readlink "$DIR/pg" || true)
check "purge" "$CLUSTER" purge "$DIR"
check "purge removes DIR and the postgres side directory" test ! -e "$DIR" -a ! -e "${side:-/nonexistent}"
for p in $P1; do
	check "nothing listens on $p after purge" eval '! listening_on "$p"'
done
for pid in $pids; do
	check "process ${pid%%:*} (${pid#*:}) is gone after purge" gone "$pid"
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
