#!/usr/bin/env bash
# shared-bench.sh — what do S3 + PostgreSQL cost next to the embedded Badger store?
#
#   scripts/shared-bench.sh [--size-mib N] [--tree DIR | --debootstrap] [--keep DIR]
#
# Builds a base and a next ext4 image (scripts/make-image.sh) and, in one run on the same
# images, measures through the HTTP API (ebsctl upload) and the FUSE mount (dd):
#   - the embedded store (Badger): ingest, cold read (fresh daemon, page cache dropped),
#     warm read (the same file read again);
#   - one daemon on S3 + PostgreSQL (scripts/cluster.sh: versitygw and PostgreSQL on
#     loopback): the same three, the cold read with an empty --cache-dir, plus a read
#     with the disk cache warm but a fresh daemon and the page cache dropped;
#   - two daemons on the same S3 + PostgreSQL: both images uploaded at once, one through
#     each daemon (aggregate ingest), then both read cold at once, each through its own
#     mount (aggregate read).
# Needs root (FUSE, dropping the page cache). Prints one table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
EBSD=${EBSD:-$root/bin/ebsd}
EBSCTL=${EBSCTL:-$root/bin/ebsctl}
size_mib=512 tree_args=() keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --tree) tree_args=(--tree "$2"); shift 2 ;;
    --debootstrap) tree_args=(--debootstrap); shift ;;
    --keep) keep=$2; shift 2 ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
rm -rf "$work"/d? "$work"/cache? "$work"/*.log "$work"/cluster
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for m in "$work"/mnt?; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  "$root/scripts/cluster.sh" purge "$work/cluster" >/dev/null 2>&1 || true
  [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN{printf "%.0f", b/1e6/(t1-t0)}'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

"$root/scripts/make-image.sh" --size-mib "$size_mib" "${tree_args[@]}" "$work/img" >/dev/null
base="$work/img/base.img" next="$work/img/next.img"
size=$(stat -c %s "$base")

# The cluster's exports go to the daemons only: ebsctl signs with the daemons' own API
# credential, which must not be confused with the S3 server's.
key="AKID$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
secret=$(head -c 30 /dev/urandom | base64)

# start N MODE: start daemon N (1 or 2) on the embedded store (MODE=local) or on the
# cluster (MODE=shared), with its mount in $work/mntN; sets E<N>.
start() {
  local n=$1 mode=$2 fifo="$work/addr$1" addr=""
  mkdir -p "$work/mnt$n"
  rm -f "$fifo"; mkfifo "$fifo"
  exec 3<>"$fifo"
  (
    if [ "$mode" = shared ]; then
      # shellcheck disable=SC1091
      . "$work/cluster.env"
      set -- --cache-dir "$work/cache$n" --cache-mb 4096
    else
      unset EBSD_CATALOG EBSD_BLOCKS
      set --
    fi
    EBSD_ACCESS_KEY_ID=$key EBSD_SECRET_ACCESS_KEY=$secret exec "$EBSD" --data-dir "$work/d$n" \
      --listen 127.0.0.1:0 --addr-file "$fifo" --mount "$work/mnt$n" --region us-east-1 \
      --gc-interval 0 --scrub-interval 0 --metrics-listen "" "$@" 2>>"$work/ebsd$n.log"
  ) &
  pids+=("$!")
  eval "pid$n=$!"
  read -r -t 60 -u 3 addr || true
  exec 3<&-
  [ -n "$addr" ] || { echo "ebsd $n did not start:" >&2; cat "$work/ebsd$n.log" >&2; exit 1; }
  eval "E$n=http://$addr"
}
stop() { local p; eval "p=\$pid$1"; kill -TERM "$p"; wait "$p" || true; }
ctl() { # ctl N ARGS: ebsctl against daemon N
  local e; eval "e=\$E$1"; shift
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 AWS_PROFILE= \
    "$EBSCTL" --endpoint-url "$e" --quiet "$@"
}
upload() { # upload N IMAGE: a full upload through daemon N; prints the snapshot id
  ctl "$1" upload --wait --state-dir "$work/state$1" "$2" >"$work/up$1.out"
  head -1 "$work/up$1.out"
}
readmb() { # readmb N ID: dd the snapshot's image through mount N; prints MB/s
  local t0 t1
  t0=$(now); dd if="$work/mnt$1/$2" of=/dev/null bs=1M count=$((size >> 20)) status=none; t1=$(now)
  mbps "$size" "$t0" "$t1"
}
# both WHAT: run what for daemons 1 and 2 at once (what N IMAGE_OR_ID), aggregate MB/s
both() {
  local t0 t1 a b
  t0=$(now)
  "$1" 1 "$2" >"$work/both1" & a=$!
  "$1" 2 "$3" >"$work/both2" & b=$!
  wait "$a" "$b"
  t1=$(now)
  mbps "$((2 * size))" "$t0" "$t1"
}
cluster_up() { # a fresh, empty cluster: every phase stores from nothing
  "$root/scripts/cluster.sh" purge "$work/cluster" >/dev/null 2>&1 || true
  "$root/scripts/cluster.sh" up "$work/cluster" >"$work/cluster.env"
}
# cpu PIDS...: CPU seconds (user + system) the processes have used so far.
cpu() {
  local p t=0
  for p in "$@"; do
    [[ $p =~ ^[0-9]+$ ]] && [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t/hz}'
}
servers() { { pgrep -f "versitygw-" || true; pgrep -u postgres postgres || true; } | tr '\n' ' '; }
# cpu_split LABEL: CPU seconds of daemon 1, versitygw and PostgreSQL since cpu_mark ran.
cpu_mark() { c0_d=$(cpu "$pid1"); read -r -a sv <<<"$(servers)"; c0_s=$(cpu "${sv[@]}"); c0_all=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat); }
cpu_split() {
  local d s all
  d=$(cpu "$pid1"); s=$(cpu "${sv[@]}")
  all=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
  awk -v l="$1" -v d0="$c0_d" -v d="$d" -v s0="$c0_s" -v s="$s" -v a0="$c0_all" -v a="$all" -v hz="$(getconf CLK_TCK)" \
    'BEGIN{printf "%s: CPU seconds: ebsd %.1f, S3 server + PostgreSQL %.1f, everything %.1f (client and the rest %.1f)\n", l, d-d0, s-s0, (a-a0)/hz, (a-a0)/hz-(d-d0)-(s-s0)}'
}
fresh() { rm -rf "$work"/d? "$work"/cache? "$work"/state?; mkdir -p "$work/state1" "$work/state2"; }

# Each setup stores the base and the next image (full uploads, one after the other or,
# with two daemons, one through each at once) into an empty store, then reads the base
# cold (fresh daemons, empty caches, page cache dropped) and warm.
phase_one() { # phase_one MODE: one daemon; sets in cold warm
  fresh
  start 1 "$1"
  local t0 t1 a
  cpu_mark
  t0=$(now); a=$(upload 1 "$base"); upload 1 "$next" >/dev/null; t1=$(now)
  in=$(mbps "$((2 * size))" "$t0" "$t1")
  split_in=$(cpu_split "ingest, $1")
  stop 1; rm -rf "$work/cache1"; start 1 "$1"; drop
  cpu_mark
  cold=$(readmb 1 "$a")
  split_rd=$(cpu_split "cold read, $1")
  warm=$(readmb 1 "$a")
  stop 1
  id_base=$a
}
phase_one local
local_in=$in local_cold=$cold local_warm=$warm splits=("$split_in" "$split_rd")
cluster_up
phase_one shared
s3_in=$in s3_cold=$cold s3_warm=$warm splits+=("$split_in" "$split_rd")
start 1 shared; drop
s3_disk=$(readmb 1 "$id_base") # disk cache warm (filled by the reads above), daemon and page cache cold
stop 1

cluster_up
fresh
start 1 shared; start 2 shared
uploadid() { upload "$@"; }
two_in=$(both uploadid "$base" "$next")
id1=$(cat "$work/both1") id2=$(cat "$work/both2")
stop 1; stop 2; rm -rf "$work/cache1" "$work/cache2"; start 1 shared; start 2 shared; drop
two_rd=$(both readmb "$id1" "$id2") # each read's own MB/s is in both1/both2; this is the pair's
stop 1; stop 2

echo
echo "== a ${size_mib} MiB ext4 image, MB/s of logical bytes ($(nproc) cores)"
printf '%-46s %10s %16s %22s\n' "" "Badger" "S3 + PostgreSQL" "two daemons, S3 + PG"
printf '%-46s %10s %16s %22s\n' "ingest of base + next through the API" "$local_in" "$s3_in" "$two_in (one each)"
printf '%-46s %10s %16s %22s\n' "cold read, dd through FUSE (empty caches)" "$local_cold" "$s3_cold" "$two_rd (one each)"
printf '%-46s %10s %16s %22s\n' "warm read (read again)" "$local_warm" "$s3_warm" ""
printf '%-46s %10s %16s %22s\n' "fresh daemon, disk cache warm, page cache cold" "" "$s3_disk" ""
printf '%s\n' "${splits[@]}"
