#!/usr/bin/env bash
# meson's custom_target runs this: cargo build, then copy the artifacts meson declared as outputs.
set -euo pipefail
src=$1; artifacts=$2; outdir=$3; shift 3
cd "$src"
"$@"
for f in libgstamazonmusic.so libgstamzdash.so libgstwidevinestub.so amzmusic-emulator; do
    cp -f "$artifacts/$f" "$outdir/$f"
done
