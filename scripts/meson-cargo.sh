#!/usr/bin/env bash
# meson's custom_target runs this: cargo build, then copy the artifacts meson declared as outputs.
#   meson-cargo.sh SRC ARTIFACT_DIR OUTDIR FILE... -- CARGO_COMMAND...
set -euo pipefail
src=$1; artifacts=$2; outdir=$(realpath "$3"); shift 3
files=()
while [ "$1" != "--" ]; do files+=("$1"); shift; done
shift
cd "$src"
"$@"
for f in "${files[@]}"; do
    cp -f "$artifacts/$f" "$outdir/$f"
done
