#!/usr/bin/env bash
# make-image.sh — build reproducible ext4 test images: a base image from a directory tree
# and a "next" image (the base plus changes, as a volume looks between two snapshots).
#
#   scripts/make-image.sh [--size-mib N] [--tree DIR | --debootstrap] OUT_DIR
#
# Without --tree a tree is generated from a fixed seed (text, binary, duplicate and empty
# files), so the images are the same on every machine. With --tree DIR that tree is used
# (/usr/share, a backup, ...). --debootstrap makes (once, cached in OUT_DIR/debian) a
# minimal Debian bookworm with debootstrap from Debian's mirror, the realistic root file
# system of a volume; it needs root, the network to the mirror, and --size-mib 1024. Writes OUT_DIR/base.img,
# OUT_DIR/next.img (the base after a package upgrade and a log rotation, see below),
# OUT_DIR/tree (the base's files) and OUT_DIR/next-tree. Needs mkfs.ext4 and debugfs
# (e2fsprogs), openssl and perl; no root.
set -euo pipefail
size_mib=256
tree=""
while [ $# -gt 1 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --tree) tree=$2; shift 2 ;;
    --debootstrap) tree=debootstrap; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { sed -n '2,15p' "$0"; exit 2; }
out=$1
mkdir -p "$out"
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000

# stream SEED BYTES: reproducible pseudo-random bytes.
stream() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 -iter 1 </dev/zero 2>/dev/null || true; } | head -c "$2"; }

if [ "$tree" = debootstrap ]; then
  tree="$out/debian"
  if [ ! -e "$tree/.complete" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$tree"
    debootstrap --variant=minbase bookworm "$tree" http://deb.debian.org/debian >"$out/debootstrap.log" 2>&1 ||
      { echo "debootstrap failed (see $out/debootstrap.log); use the generated tree instead" >&2; exit 1; }
    rm -rf "$tree/var/cache/apt/archives"/*.deb "$tree/proc"/* "$tree/sys"/* "$tree/dev"/* 2>/dev/null || true
    touch "$tree/.complete"
  fi
elif [ -z "$tree" ]; then
  tree="$out/tree"
  rm -rf "$tree"
  mkdir -p "$tree"
  for d in 1 2 3 4 5 6; do
    mkdir -p "$tree/dir$d/sub"
    for f in 1 2 3 4 5; do
      n=$(( (d * 7 + f * 13) % 17 + 1 ))
      # text: compressible, like configuration, logs and sources
      seq "$((d * 1000 + f))" "$((d * 1000 + f + n * 2500))" | sed 's/^/line number /' >"$tree/dir$d/text$f.txt"
      # binary: incompressible, like packed libraries and media
      stream "bin-$d-$f" $((n * 30720)) >"$tree/dir$d/sub/blob$f.bin"
    done
    cp "$tree/dir$d/sub/blob1.bin" "$tree/dir$d/copy-of-blob1.bin" # duplicates dedup away
  done
  : >"$tree/empty"
  ln -sf dir1/text1.txt "$tree/link"
fi

# Same timestamps on every run, so the images are byte-identical.
find "$tree" -exec touch -h -d @1700000000 {} +
rm -f "$out/base.img"
truncate -s "${size_mib}M" "$out/base.img"
mkfs.ext4 -q -F -b 4096 -U 2f1b3a8e-1f6c-4c1a-9c59-2e1e6a0f5b11 -E root_owner=0:0,hash_seed=6c7c2a3d-5a4e-4b5f-8e2a-1b3c4d5e6f70,lazy_itable_init=0 -d "$tree" "$out/base.img"

# mkfs copies each file's ctime, which touch cannot set: pin it inside the image.
( cd "$tree" && find . -mindepth 1 -printf 'sif "/%P" ctime @1700000000\n' ) | debugfs -w -f - "$out/base.img" >/dev/null 2>&1

# next.img: the base a month later, after what a Debian system writes between two
# snapshots: a package upgrade and a log rotation (BENCHMARKS.md, "the incremental
# change"). Everything is derived from the tree, so the same tree gives the same images:
#  - upgrade: every 8th regular file of 64 KiB to 4 MiB under usr/ (the whole tree when it
#    has no usr/), in sorted order, up to 8 MiB, is replaced by its new version: the same
#    bytes with the first 16 of every 4 KiB changed. A rebuilt binary or library differs
#    throughout (addresses, build ids), so neither fixed blocks nor content-defined chunks
#    find the old version in it, and it compresses as the old one did. As dpkg installs
#    it: written next to the old file (NAME.dpkg-new), renamed over it, the old one freed.
#  - dpkg's database: var/lib/dpkg/status, when there is one, is copied to status-old and
#    rewritten with the upgraded packages' versions bumped (text).
#  - log rotation (Debian's logrotate: delaycompress): var/log/dpkg.log, when there is one,
#    becomes dpkg.log.1 and a new dpkg.log holds the upgrade's lines (text).
#  - a package removed: the second regular file of the tree in sorted order is deleted.
# What it leaves out: apt's package lists (`apt update` rewrites var/lib/apt/lists, 50 MB
# here, as new files with few changed bytes; content-defined chunking finds the old copy
# at any offset, 512 KiB blocks only where the new file happens to line up).
upd="$out/upgrade"
rm -rf "$upd" "$out/next-tree"
mkdir -p "$upd"
cp -a "$tree" "$out/next-tree"
remove=$(cd "$tree" && find . -type f -size +0 | LC_ALL=C sort | sed -n '2s|^\./||p')
scope=usr; [ -d "$tree/usr" ] || scope=.
( cd "$tree" && find "$scope" -type f -size +64k -size -4097k | LC_ALL=C sort | sed 's|^\./||' | awk 'NR % 8 == 1' ) >"$upd/candidates"
: >"$upd/files"
total=0
while IFS= read -r f; do
  n=$(stat -c %s "$tree/$f")
  [ $((total + n)) -le $((8 << 20)) ] || continue
  total=$((total + n))
  echo "$f" >>"$upd/files"
done <"$upd/candidates"
cmds="$upd/debugfs.cmds"
: >"$cmds"
i=0
while IFS= read -r f; do
  i=$((i + 1))
  # The new version: 16 bytes of every 4 KiB replaced (file number, page, a marker).
  perl -e 'my ($n, $in, $out) = @ARGV; open(I, "<", $in) or die; binmode I; open(O, ">", $out) or die; binmode O;
    my $p = 0; while (read(I, my $b, 4096)) { substr($b, 0, 16) = pack("NNNN", $n, $p++, 0x75706772, 2) if length($b) >= 16; print O $b } close O or die;' \
    "$i" "$tree/$f" "$upd/$i"
  rm -f "$out/next-tree/$f" && cp "$upd/$i" "$out/next-tree/$f" # a new inode, as in the image
  printf 'write %s /%s.dpkg-new\nrm /%s\nln /%s.dpkg-new /%s\nunlink /%s.dpkg-new\nsif /%s mode 0%o\n' \
    "$upd/$i" "$f" "$f" "$f" "$f" "$f" "$f" "0x$(stat -c %f "$tree/$f")" >>"$cmds"
done <"$upd/files"
if [ -f "$tree/var/lib/dpkg/status" ]; then
  cp "$tree/var/lib/dpkg/status" "$upd/status-old"
  # Bump the version of every 4th package, as an upgrade of those would.
  awk '/^Version: / && (++n % 4 == 1) { print $0 "+deb12u1"; next } { print }' "$tree/var/lib/dpkg/status" >"$upd/status"
  cp "$upd/status-old" "$out/next-tree/var/lib/dpkg/status-old"
  cp "$upd/status" "$out/next-tree/var/lib/dpkg/status"
  printf 'rm /var/lib/dpkg/status-old\nwrite %s /var/lib/dpkg/status-old\nrm /var/lib/dpkg/status\nwrite %s /var/lib/dpkg/status\n' \
    "$upd/status-old" "$upd/status" >>"$cmds"
fi
# The upgrade's lines in dpkg's log format, one run of them per upgraded file.
awk '{ pkg = $0; sub(/.*\//, "", pkg); sub(/\..*/, "", pkg)
  for (s = 0; s < 6; s++) printf "2023-12-14 06:%02d:%02d %s %s:amd64 1.%d-1 1.%d-1+deb12u1\n", NR % 60, s * 9, \
    (s == 0 ? "upgrade" : "status " (s < 3 ? "unpacked" : (s < 5 ? "half-configured" : "installed"))), pkg, NR, NR }' \
  "$upd/files" >"$upd/dpkg.log"
mkdir -p "$out/next-tree/var/log"
if [ -f "$tree/var/log/dpkg.log" ]; then
  cp "$tree/var/log/dpkg.log" "$out/next-tree/var/log/dpkg.log.1"
  printf 'ln /var/log/dpkg.log /var/log/dpkg.log.1\nunlink /var/log/dpkg.log\n' >>"$cmds"
elif [ ! -d "$tree/var/log" ]; then
  printf 'mkdir /var\nmkdir /var/log\n' >>"$cmds"
fi
cp "$upd/dpkg.log" "$out/next-tree/var/log/dpkg.log"
printf 'write %s /var/log/dpkg.log\n' "$upd/dpkg.log" >>"$cmds"
printf 'rm /%s\n' "$remove" >>"$cmds"
rm -f "$out/next-tree/$remove"
cp --sparse=always "$out/base.img" "$out/next.img"
debugfs -w -f "$cmds" "$out/next.img" >"$upd/debugfs.log" 2>&1
e2fsck -fn "$out/next.img" >/dev/null 2>&1 || { echo "next.img does not check clean (debugfs log: $upd/debugfs.log)" >&2; exit 1; }
echo "$(wc -l <"$upd/files") files upgraded ($(du -cb $(sed "s|^|$tree/|" "$upd/files") | tail -1 | cut -f1) bytes)" >&2
rm -rf "$upd"
echo "$out/base.img $out/next.img ($(du -sh "$tree" | cut -f1) of files in ${size_mib} MiB images)"
