#!/usr/bin/env bash
# restore-test.sh — the end-to-end, dd-style restore test of one image.
#
#   scripts/restore-test.sh [--tree DIR] [--endpoint URL --mount DIR] IMAGE
#
# Starts a daemon on a temp dir with a fresh random credential, or uses the one at
# --endpoint (its FUSE export at --mount) with the caller's AWS credentials (environment,
# or a profile with AWS_PROFILE). Uploads IMAGE with ebsctl and waits for it, then reads it
# back: dd and cmp through the FUSE file, e2fsck -fn, a read-only loop mount compared with
# diff -r against --tree (the files the image was made from), ebsctl download + cmp, and
# ebsctl verify. Prints PASS/FAIL per step with timings; exits non-zero if any step
# failed. Needs root for the FUSE and loop mounts.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
EBSD=${EBSD:-$root/bin/ebsd}
EBSCTL=${EBSCTL:-$root/bin/ebsctl}
tree="" endpoint="" mnt=""
while [ $# -gt 1 ]; do
  case "$1" in
    --tree) tree=$2; shift 2 ;;
    --endpoint) endpoint=$2; shift 2 ;;
    --mount) mnt=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -z "$endpoint" ] || [ -n "$mnt" ] || { echo "--endpoint needs --mount (the daemon's FUSE export)" >&2; exit 2; }
[ $# -eq 1 ] || { sed -n '2,/^set /{/^#/p}' "$0"; exit 2; }
image=$1
size=$(stat -c %s "$image")
work=$(mktemp -d)
loop="$work/loop"
daemon_pid=""
cleanup() {
  mountpoint -q "$loop" 2>/dev/null && umount "$loop"
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$endpoint" ]; then
  # A daemon of our own, with a fresh credential that only this run knows: ebsd is given
  # it (EBSD_*), ebsctl signs with it (AWS_*). Nothing of the caller's AWS setup applies.
  key="AKID$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
  secret=$(head -c 30 /dev/urandom | base64)
  export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1
  unset AWS_SESSION_TOKEN AWS_PROFILE
  mnt="$work/mnt"
  # The daemon writes HOST:PORT into the FIFO once it serves (and its FUSE export is
  # mounted). Opening it read-write never blocks, so read -t bounds the wait.
  mkfifo "$work/addr"
  exec 3<>"$work/addr"
  EBSD_ACCESS_KEY_ID=$key EBSD_SECRET_ACCESS_KEY=$secret "$EBSD" --data-dir "$work/data" --listen 127.0.0.1:0 \
    --addr-file "$work/addr" --mount "$mnt" --region us-east-1 --gc-interval 0 --metrics-listen "" 2>"$work/ebsd.log" &
  daemon_pid=$!
  addr=""
  read -r -t 60 -u 3 addr || true
  exec 3<&-
  [ -n "$addr" ] && mountpoint -q "$mnt" || { echo "ebsd did not start:"; cat "$work/ebsd.log"; exit 1; }
  endpoint="http://$addr"
fi
ctl() { "$EBSCTL" --endpoint-url "$endpoint" --quiet "$@"; }

pass=0 fail=0
step() {
  local name=$1; shift
  local t0=$(date +%s.%N)
  if "$@" >"$work/step.log" 2>&1; then
    pass=$((pass + 1)); printf 'PASS  %-34s %6.2fs\n' "$name" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a-b}')"
  else
    fail=$((fail + 1)); printf 'FAIL  %-34s %6.2fs\n' "$name" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a-b}')"
    sed 's/^/      /' "$work/step.log" | tail -20
  fi
}

upload() {
  ctl upload --wait --state-dir "$work" --description "restore test of $(basename "$image")" "$image" >"$work/upload.out" &&
    head -1 "$work/upload.out" >"$work/id"
}
step "upload (ebsctl upload --wait)" upload
id=$(cat "$work/id" 2>/dev/null || echo missing)
img="$mnt/$id"
echo "      snapshot $id, $(tail -1 "$work/upload.out" 2>/dev/null)"
ddcopy() { dd if="$img" of="$work/dd.img" bs=1M count=$(( (size + 1048575) / 1048576 )) status=none && truncate -s "$size" "$work/dd.img" && cmp "$image" "$work/dd.img"; }
step "dd bs=1M through FUSE + cmp" ddcopy
step "cmp image vs FUSE file" cmp -n "$size" "$image" "$img"
step "rest of the volume reads zero" ctl verify --mount "$mnt" "$id" "$image"
step "e2fsck -fn on the FUSE file" e2fsck -fn "$img"
loopdiff() {
  mkdir -p "$loop" && mount -o loop,ro "$img" "$loop" &&
    if [ -n "$tree" ]; then diff -r --no-dereference -x lost+found "$tree" "$loop"; else ls -R "$loop" >/dev/null; fi
  local rc=$?
  umount "$loop"
  return $rc
}
step "mount -o loop,ro + diff -r tree" loopdiff
download() { ctl download "$id" "$work/restored.img" && cmp -n "$size" "$image" "$work/restored.img"; }
step "ebsctl download + cmp" download
step "ebsctl verify (API)" ctl verify "$id" "$image"

echo "restore test of $image: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
