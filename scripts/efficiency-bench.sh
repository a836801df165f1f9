#!/usr/bin/env bash
# efficiency-bench.sh — how much do dedup and compression save, and how fast?
#
#   scripts/efficiency-bench.sh [--size-mib N] [--tree DIR | --debootstrap] [--keep DIR]
#
# Builds a base and a changed ("next") ext4 image (scripts/make-image.sh), prints ebsctl's
# efficiency report for them (logical, written, unique, stored bytes, ratios, growth),
# then stores both in ebsd (the next one as an incremental child) and in restic (the
# Debian package, installed if missing) side by side: stored bytes, growth of the second
# snapshot, ingest MB/s, and cold read-back MB/s with dd through each one's FUSE mount.
# Needs root (FUSE, dropping the page cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
EBSD=${EBSD:-$root/bin/ebsd}
EBSCTL=${EBSCTL:-$root/bin/ebsctl}
size_mib=512 tree_args=() keep="" tree_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --tree) tree_args=(--tree "$2"); tree_dir=$2; shift 2 ;;
    --debootstrap) tree_args=(--debootstrap); shift ;;
    --keep) keep=$2; shift 2 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; }
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
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
# opened read-write, the FIFO never blocks the open, so read -t bounds the wait.
rm -f "$work/ebsd-addr"; mkfifo "$work/ebsd-addr"
exec 3<>"$work/ebsd-addr"
EBSD_ACCESS_KEY_ID=$key EBSD_SECRET_ACCESS_KEY=$secret "$EBSD" --data-dir "$work/ebsd-data" --listen 127.0.0.1:0 \
  --addr-file "$work/ebsd-addr" --mount "$work/ebsd-mnt" --region us-east-1 --gc-interval 0 --metrics-listen "" 2>"$work/ebsd.log" &
pids+=($!)
addr=""
read -r -t 60 -u 3 addr || true
exec 3<&-
[ -n "$addr" ] || { echo "ebsd did not start:" >&2; cat "$work/ebsd.log" >&2; exit 1; }
E="http://$addr"
ctl() { "$EBSCTL" --endpoint-url "$E" --quiet "$@"; }
t0=$(now); ctl upload --wait --state-dir "$work" "$base" >"$work/up1.out"; t1=$(now); sid1=$(head -1 "$work/up1.out")
ebsd_in1=$(mbps "$size" "$t0" "$t1"); ebsd_s1=$(ctl --json stats | sed 's/.*"storedBytes":\([0-9]*\).*/\1/')
t0=$(now); ctl upload --wait --state-dir "$work" --parent "$sid1" --base-image "$base" "$next" >"$work/up2.out"; t1=$(now); sid2=$(head -1 "$work/up2.out")
ebsd_in2=$(mbps "$size" "$t0" "$t1"); ebsd_s2=$(ctl --json stats | sed 's/.*"storedBytes":\([0-9]*\).*/\1/')
drop; t0=$(now); dd if="$work/ebsd-mnt/$sid2" of=/dev/null bs=1M count=$((size >> 20)) status=none; t1=$(now)
ebsd_rd=$(mbps "$size" "$t0" "$t1")
ebsd_disk=$(bytes "$work/ebsd-data")

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
restic mount -q "$work/restic-mnt" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -e "$work/restic-mnt/snapshots/latest" ] && break; sleep 0.2; done
rfile=$(find "$work/restic-mnt/snapshots/latest/" -name disk.img | head -1)
drop; t0=$(now); dd if="$rfile" of=/dev/null bs=1M status=none; t1=$(now)
restic_rd=$(mbps "$size" "$t0" "$t1")

mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
echo
echo "== two snapshots of a ${size_mib} MiB volume, side by side"
printf '%-34s %16s %16s\n' "" "ebsd (zstd)" "restic $(restic version | cut -d' ' -f2)"
printf '%-34s %16s %16s\n' "stored after base" "$(mib "$ebsd_s1")" "$(mib "$restic_s1")"
printf '%-34s %16s %16s\n' "stored after next" "$(mib "$ebsd_s2")" "$(mib "$restic_s2")"
printf '%-34s %16s %16s\n' "growth of the next snapshot" "$(mib $((ebsd_s2 - ebsd_s1)))" "$(mib $((restic_s2 - restic_s1)))"
printf '%-34s %16s %16s\n' "data directory on disk" "$(mib "$ebsd_disk")" "$(mib "$(bytes "$RESTIC_REPOSITORY")")"
printf '%-34s %13s MB/s %11s MB/s\n' "ingest base (per logical byte)" "$ebsd_in1" "$restic_in1"
printf '%-34s %13s MB/s %11s MB/s\n' "ingest next" "$ebsd_in2" "$restic_in2"
printf '%-34s %13s MB/s %11s MB/s\n' "cold read-back, dd via FUSE" "$ebsd_rd" "$restic_rd"
