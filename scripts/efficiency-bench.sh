#!/usr/bin/env bash
# efficiency-bench.sh — how much do dedup and compression save, and how fast?
#
#   scripts/efficiency-bench.sh [--size-mib N] [--tree DIR | --debootstrap] [--keep DIR]
#                               [--compression zstd|s2|none] [--recompress LEVEL] [--reads N]
#
# Builds a base and a changed ("next": a package upgrade and a log rotation, as a Debian
# system writes them between two snapshots) ext4 image (scripts/make-image.sh), prints ebsctl's
# efficiency report for them (logical, written, unique, stored bytes, ratios, growth),
# then stores both in ebsd (the next one as an incremental child) and in restic (the
# Debian package, installed if missing) side by side: stored bytes (du of each one's
# directory at rest, ebsd's less its fixed space reserve), growth of the second
# snapshot, ingest MB/s, and cold read-back MB/s with dd through each one's FUSE mount
# (the median of --reads rounds, default 5, ebsd's and restic's reads interleaved).
# --compression is ebsd's for puts (its default: zstd, or s2 with --recompress). With
# --recompress LEVEL the daemon settles (README
# "Settling"): after each upload the bench waits for the settling pass to finish and runs
# a GC before it measures stored bytes.
# The last lines are the ratios ebsd/restic with PASS/FAIL against the goals (ingest >= 2x,
# stored <= 0.95x, cold read >= 4x), for the base image and for the incremental next one;
# before them, ebsd's warm re-read against page-cache dd (>= 0.8x, medians of --reads
# rounds too) and its peak RSS while 64 clients upload the base (< 512 MiB).
# Needs root (FUSE, dropping the page cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
EBSD=${EBSD:-$root/bin/ebsd}
EBSCTL=${EBSCTL:-$root/bin/ebsctl}
size_mib=512 tree_args=() keep="" tree_dir="" recompress=off settle_idle=2 compression="" reads=5
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --tree) tree_args=(--tree "$2"); tree_dir=$2; shift 2 ;;
    --debootstrap) tree_args=(--debootstrap); shift ;;
    --keep) keep=$2; shift 2 ;;
    --recompress) recompress=$2; shift 2 ;;
    --compression) compression=$2; shift 2 ;;
    --reads) reads=$2; shift 2 ;;
    *) sed -n '2,/^# Needs root/p' "$0"; exit 2 ;;
  esac
done
[[ "$reads" =~ ^[1-9][0-9]*$ ]] || { echo "--reads wants a positive number of rounds" >&2; exit 2; }
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; }
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
# A kept directory may hold an earlier run's stores (its debootstrap tree is reused).
rm -rf "$work/ebsd-data" "$work/restic-repo" "$work/restic-cache" "$work/ebsd.log"
pids=()
cleanup() {
  # restic mount leaves its mount behind when killed; unmounted, it exits by itself. A
  # stopped process may exit non-zero (SIGTERM): that must not become the script's status.
  mountpoint -q "$work/restic-mnt" 2>/dev/null && { umount "$work/restic-mnt" || true; }
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for m in "$work/restic-mnt" "$work/ebsd-mnt"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN{printf "%.0f", b/1e6/(t1-t0)}'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
bytes() { du -sB1 "$1" | cut -f1; } # allocated, as the disk sees it (Badger preallocates sparse files)

"$root/scripts/make-image.sh" --size-mib "$size_mib" "${tree_args[@]}" "$work/img" >/dev/null
base="$work/img/base.img" next="$work/img/next.img"
size=$(stat -c %s "$base")
[ "${tree_args[0]:-}" = --debootstrap ] && tree_dir="$work/img/debian"
echo "== images: $(du -sh "${tree_dir:-$work/img/tree}" | cut -f1) of files in ${size_mib} MiB ext4 images"
"$EBSCTL" bench --simulate --svg "$work/efficiency.svg" "$base" "$next"
echo "(chart: $work/efficiency.svg)"

# --- ebsd
# A fresh credential only this run knows: ebsd is given it (EBSD_*), ebsctl signs with it.
key="AKID$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
secret=$(head -c 30 /dev/urandom | base64)
export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE
mkdir -p "$work/ebsd-mnt"
# The daemon writes HOST:PORT into the FIFO once it serves with its FUSE export mounted;
# opened read-write, the FIFO never blocks the open, so read -t bounds the wait. Each cold
# read starts it afresh, so its block cache holds nothing either.
rm -f "$work/ebsd-addr"; mkfifo "$work/ebsd-addr"
ebsd_pid=""
start_ebsd() { # start_ebsd [DATA-DIR]
  exec 3<>"$work/ebsd-addr"
  EBSD_ACCESS_KEY_ID=$key EBSD_SECRET_ACCESS_KEY=$secret "$EBSD" --data-dir "${1:-$work/ebsd-data}" --listen 127.0.0.1:0 \
    --addr-file "$work/ebsd-addr" --mount "$work/ebsd-mnt" --region us-east-1 --gc-interval 0 --metrics-listen "${EBSD_METRICS_LISTEN:-}" \
    ${compression:+--compression "$compression"} --recompress "$recompress" --recompress-mb-per-sec 0 --recompress-idle "${settle_idle}s" 2>>"$work/ebsd.log" &
  ebsd_pid=$!
  pids+=("$ebsd_pid")
  addr=""
  read -r -t 60 -u 3 addr || true
  exec 3<&-
  [ -n "$addr" ] || { echo "ebsd did not start:" >&2; cat "$work/ebsd.log" >&2; exit 1; }
  E="http://$addr"
}
stop_ebsd() { kill -TERM "$ebsd_pid"; wait "$ebsd_pid" || true; }
start_ebsd
ctl() { "$EBSCTL" --endpoint-url "$E" --quiet "$@"; }
# stored: what the data directory takes on disk (du) with the daemon stopped, as
# restic's repository is measured, less the space reserve, a preallocated file of fixed
# size that holds no data (DESIGN.md rule 18; printed on its own). A running daemon's
# directory is up to a few MiB larger: Badger trims the files it writes at close.
reserve_file="$work/ebsd-data/space-reserve"
stored() { echo $(($(bytes "$work/ebsd-data") - $(bytes "$reserve_file"))); }
# settle: with --recompress, wait (at most 30 minutes) until the settler has logged a
# pass since the upload and then no further one for 5 idle periods (a pass that began
# while the upload ran is followed by another), then collect, so the old copies leave the
# disk. Sets settle_took.
settle_took=""
settle() {
  [ "$recompress" != off ] || return 0
  local t0 deadline=$((SECONDS + 1800)) n0 n last quiet=0
  t0=$(now)
  n0=$(grep -c 'settle pass' "$work/ebsd.log" || true)
  last=$n0
  while [ "$quiet" -lt $((5 * settle_idle)) ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "settling did not finish in 30 minutes" >&2; exit 1; }
    sleep 1
    n=$(grep -c 'settle pass' "$work/ebsd.log" || true)
    if [ "$n" -ne "$last" ]; then last=$n quiet=0; elif [ "$n" -gt "$n0" ]; then quiet=$((quiet + 1)); fi
  done
  ctl gc >/dev/null
  settle_took=$(awk -v t0="$t0" -v t1="$(now)" 'BEGIN{printf "%.0f s", t1-t0}')
}
t0=$(now); ctl upload --wait --state-dir "$work" "$base" >"$work/up1.out"; t1=$(now); sid1=$(head -1 "$work/up1.out")
ebsd_in1=$(mbps "$size" "$t0" "$t1"); settle; settle_s1=$settle_took
stop_ebsd; ebsd_s1=$(stored); start_ebsd
t0=$(now); ctl upload --wait --state-dir "$work" --parent "$sid1" --base-image "$base" "$next" >"$work/up2.out"; t1=$(now); sid2=$(head -1 "$work/up2.out")
ebsd_in2=$(mbps "$size" "$t0" "$t1"); settle; settle_s2=$settle_took
[ "$recompress" = off ] || ctl stats | sed 's/^/ebsd stats: /'
stop_ebsd; ebsd_s2=$(stored)
ebsd_disk=$(bytes "$work/ebsd-data") ebsd_reserve=$(bytes "$reserve_file")
# Each cold read starts the daemon afresh, so its block cache holds nothing.
ebsd_cold_read() { # ebsd_cold_read SNAPSHOT-ID: appends its MB/s to rd
  start_ebsd
  drop; t0=$(now); dd if="$work/ebsd-mnt/$1" of=/dev/null bs=1M count=$((size >> 20)) status=none; t1=$(now)
  stop_ebsd
  rd+=("$(mbps "$size" "$t0" "$t1")")
}

# --- restic
export RESTIC_REPOSITORY="$work/restic-repo" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
restic init -q
cp --sparse=always "$base" "$work/disk.img"
t0=$(now); restic backup -q "$work/disk.img"; t1=$(now)
restic_in1=$(mbps "$size" "$t0" "$t1"); restic_s1=$(bytes "$RESTIC_REPOSITORY")
cp --sparse=always "$next" "$work/disk.img"
t0=$(now); restic backup -q "$work/disk.img"; t1=$(now)
restic_in2=$(mbps "$size" "$t0" "$t1"); restic_s2=$(bytes "$RESTIC_REPOSITORY")
mkdir -p "$work/restic-mnt"
# Each cold read mounts afresh, so restic's in-memory blob cache holds nothing either;
# snapshots/ holds one directory per snapshot, named by time (oldest first), and latest.
restic_pid=""
restic_cold_read() { # restic_cold_read 1|2: dd the image of the first or the last snapshot; appends its MB/s to rd
  restic mount -q "$work/restic-mnt" >/dev/null 2>&1 &
  restic_pid=$!
  pids+=("$restic_pid")
  for _ in $(seq 100); do [ -e "$work/restic-mnt/snapshots/latest" ] && break; sleep 0.2; done
  local dirs rfile
  dirs=$(find "$work/restic-mnt/snapshots/" -mindepth 1 -maxdepth 1 -type d ! -name latest | sort)
  if [ "$1" = 1 ]; then dirs=$(echo "$dirs" | head -1); else dirs=$(echo "$dirs" | tail -1); fi
  rfile=$(find "$dirs/" -name disk.img | head -1)
  drop; t0=$(now); dd if="$rfile" of=/dev/null bs=1M status=none; t1=$(now)
  umount "$work/restic-mnt"; wait "$restic_pid" || true
  rd+=("$(mbps "$size" "$t0" "$t1")")
}
# Cold reads, --reads rounds of four interleaved so both stores read under the same
# conditions (this machine's speed varies by 10-20% from one second to the next); the
# medians count, and every round is printed.
rd=() # rd[round*4 + k]: ebsd base, restic base, ebsd next, restic next
for ((i = 0; i < reads; i++)); do
  ebsd_cold_read "$sid1"; restic_cold_read 1; ebsd_cold_read "$sid2"; restic_cold_read 2
done
# Warm re-read: the base read through the daemon's mount from the page cache, next to the
# image file itself read the same way. Both are read twice after the page cache was
# dropped, as BenchmarkFUSERead does (the kernel moves a page to its active list on the
# second read, a one-off cost outside either reader), then timed in --reads interleaved
# rounds; the medians count.
start_ebsd
drop
for f in "$work/ebsd-mnt/$sid1" "$base"; do cat "$f" >/dev/null; cat "$f" >/dev/null; done
warm=() # warm[round*2 + k]: ebsd, page-cache dd
for ((i = 0; i < reads; i++)); do
  t0=$(now); dd if="$work/ebsd-mnt/$sid1" of=/dev/null bs=1M count=$((size >> 20)) status=none; t1=$(now)
  warm+=("$(mbps "$size" "$t0" "$t1")")
  t0=$(now); dd if="$base" of=/dev/null bs=1M status=none; t1=$(now)
  warm+=("$(mbps "$size" "$t0" "$t1")")
done
stop_ebsd
# Memory: the peak resident set of a fresh daemon while 64 clients upload the base.
rm -rf "$work/rss-data" "$work/rss-state"; mkdir -p "$work/rss-state"
start_ebsd "$work/rss-data"
ctl upload --wait --workers 64 --state-dir "$work/rss-state" "$base" >/dev/null
ebsd_rss_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$ebsd_pid/status")
stop_ebsd
rm -rf "$work/rss-data" "$work/rss-state"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
column() { # column ARRAY STRIDE K: the K-th of every STRIDE values of ARRAY (its rounds)
  local -n a=$1
  local out=() j
  for ((j = $3; j < ${#a[@]}; j += $2)); do out+=("${a[j]}"); done
  echo "${out[*]}"
}
# shellcheck disable=SC2046 # word splitting of the rounds is meant
{
  ebsd_rd1=$(median $(column rd 4 0)); restic_rd1=$(median $(column rd 4 1)); ebsd_rd2=$(median $(column rd 4 2)); restic_rd2=$(median $(column rd 4 3))
  ebsd_warm=$(median $(column warm 2 0)); pagecache_dd=$(median $(column warm 2 1))
}

mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
echo
echo "== two snapshots of a ${size_mib} MiB volume, side by side"
codec=${compression:-$([ "$recompress" = off ] && echo zstd || echo s2)} # the daemon's default
label="ebsd ($codec)"; [ "$recompress" = off ] || label="ebsd ($codec, $recompress)"
printf '%-34s %16s %16s\n' "" "$label" "restic $(restic version | cut -d' ' -f2)"
printf '%-34s %16s %16s\n' "stored after base (du)" "$(mib "$ebsd_s1")" "$(mib "$restic_s1")"
printf '%-34s %16s %16s\n' "stored after next (du)" "$(mib "$ebsd_s2")" "$(mib "$restic_s2")"
printf '%-34s %16s %16s\n' "growth of the next snapshot" "$(mib $((ebsd_s2 - ebsd_s1)))" "$(mib $((restic_s2 - restic_s1)))"
printf '%-34s %16s %16s\n' "data directory on disk" "$(mib "$ebsd_disk")" "$(mib "$(bytes "$RESTIC_REPOSITORY")")"
printf '%-34s %16s %16s\n' "  of which the space reserve" "$(mib "$ebsd_reserve")" "-"
printf '%-34s %13s MB/s %11s MB/s\n' "ingest base (per logical byte)" "$ebsd_in1" "$restic_in1"
printf '%-34s %13s MB/s %11s MB/s\n' "ingest next" "$ebsd_in2" "$restic_in2"
printf '%-34s %13s MB/s %11s MB/s\n' "cold read-back base, dd via FUSE" "$ebsd_rd1" "$restic_rd1"
printf '%-34s %13s MB/s %11s MB/s\n' "cold read-back next, dd via FUSE" "$ebsd_rd2" "$restic_rd2"
printf '%-34s %16s %16s\n' "  the median of rounds, base" "$(column rd 4 0)" "$(column rd 4 1)"
printf '%-34s %16s %16s\n' "  the median of rounds, next" "$(column rd 4 2)" "$(column rd 4 3)"
printf '%-34s %s\n' "warm re-read rounds: ebsd | dd" "$(column warm 2 0) | $(column warm 2 1) MB/s"
[ "$recompress" = off ] || printf '%-34s %16s\n' "settling + GC after base, next" "$settle_s1, $settle_s2"

# ratio NAME EBSD RESTIC UNIT GOAL: ebsd/restic, PASS if it meets GOAL (">=X" or "<=X").
ratio() {
  awk -v n="$1" -v e="$2" -v r="$3" -v u="$4" -v g="$5" 'BEGIN{
    x = (r > 0) ? e / r : 0; op = substr(g, 1, 2); v = substr(g, 3) + 0
    ok = (op == ">=") ? (x >= v) : (x <= v)
    if (u == "KiB") { es = sprintf("%.0f KiB", e / 1024); rs = sprintf("%.0f KiB", r / 1024) } else { es = e " MB/s"; rs = r " MB/s" }
    printf "ratio %-22s %6.2fx  (ebsd %s, restic %s; goal %s%s)  %s\n", n, x, es, rs, op, v "x", ok ? "PASS" : "FAIL"
  }'
}
awk -v w="$ebsd_warm" -v p="$pagecache_dd" 'BEGIN{x = w / p
  printf "warm re-read %11.2fx  (ebsd %s MB/s, page-cache dd of the image %s MB/s; goal >=0.8x)  %s\n", x, w, p, (x >= 0.8) ? "PASS" : "FAIL"}'
awk -v k="$ebsd_rss_kib" 'BEGIN{m = k / 1024
  printf "peak RSS, 64-client ingest %.0f MiB  (goal <512 MiB)  %s\n", m, (m < 512) ? "PASS" : "FAIL"}'

echo
ratio "ingest base" "$ebsd_in1" "$restic_in1" MBps ">=2"
ratio "stored base" "$ebsd_s1" "$restic_s1" KiB "<=0.95"
ratio "cold-read base" "$ebsd_rd1" "$restic_rd1" MBps ">=4"
ratio "ingest next" "$ebsd_in2" "$restic_in2" MBps ">=2"
ratio "stored growth next" "$((ebsd_s2 - ebsd_s1))" "$((restic_s2 - restic_s1))" KiB "<=0.95"
ratio "cold-read next" "$ebsd_rd2" "$restic_rd2" MBps ">=4"
