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
# OUT_DIR/next.img, OUT_DIR/tree (the base's files) and OUT_DIR/next-tree. Needs
# mkfs.ext4 and debugfs (e2fsprogs) and openssl; no root.
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

# next.img: the base plus a new file, a rewritten file and a deleted one (the first and
# second regular files of the tree in sorted order, whatever the tree).
rewrite=$(cd "$tree" && find . -type f -size +0 | LC_ALL=C sort | sed -n '1s|^\./||p')
remove=$(cd "$tree" && find . -type f -size +0 | LC_ALL=C sort | sed -n '2s|^\./||p')
cp --sparse=always "$out/base.img" "$out/next.img"
stream next-new 3145728 >"$out/new-file.bin"
seq 1 40000 | sed 's/^/rewritten /' >"$out/rewritten.txt"
debugfs -w -f - "$out/next.img" >/dev/null 2>&1 <<CMDS
write $out/new-file.bin new-file.bin
rm /$rewrite
write $out/rewritten.txt /$rewrite
rm /$remove
CMDS
rm -rf "$out/next-tree"
cp -a "$tree" "$out/next-tree"
cp "$out/new-file.bin" "$out/next-tree/new-file.bin"
cp "$out/rewritten.txt" "$out/next-tree/$rewrite"
rm -f "$out/next-tree/$remove" "$out/new-file.bin" "$out/rewritten.txt"
e2fsck -fn "$out/next.img" >/dev/null 2>&1
echo "$out/base.img $out/next.img ($(du -sh "$tree" | cut -f1) of files in ${size_mib} MiB images)"
