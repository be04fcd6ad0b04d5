#!/bin/sh
# Builds the ts-vmm firmware ROM from reset.s with binutils. Usage: firmware/build.sh OUTPUT.bin
# Deterministic: no timestamps or build ids reach the flat binary.
set -eu
out=${1:?usage: build.sh OUTPUT.bin}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
as --64 -o "$work/reset.o" "$here/reset.s"
ld -m elf_x86_64 -nostdlib --build-id=none -Ttext=0xfffff000 -e start16 -o "$work/reset.elf" "$work/reset.o"
objcopy -O binary -j .text "$work/reset.elf" "$out"
size=$(wc -c < "$out")
if [ "$size" -ne 4096 ]; then
  echo "firmware is $size bytes, expected exactly one 4096-byte page" >&2
  exit 1
fi
