#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds, starts the emulator, and plays a
# track through amazonmusicsrc ! amzdashdemux ! qtdemux ! widevinedecrypt (inside playbin3)
# across the 30 s clear/encrypted boundary, to the sound card or to a WAV file. Exits 0 when the
# track played to its end; stops the emulator in every case.
#   scripts/demo.sh [amazonmusic://track/<id> | amazonmusic://album/<id> ...] [-- amzmusic-play options]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --workspace --locked

# Where cargo put the build (CARGO_TARGET_DIR, if set, relative to the workspace as cargo reads it).
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
target=$target/debug
work=$(mktemp -d /tmp/amzmusic-demo.XXXXXX)
emulator_pid=
cleanup() {
    [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

echo "demo: starting amzmusic-emulator (content is generated on first use and cached)"
"$target/amzmusic-emulator" serve --env-file "$work/env" > "$work/ready" &
emulator_pid=$!
for _ in $(seq 1 600); do
    grep -q '^ready ' "$work/ready" 2>/dev/null && break
    kill -0 "$emulator_pid" 2>/dev/null || { echo "demo: the emulator did not start" >&2; exit 1; }
    sleep 0.1
done
echo "demo: emulator at $(sed -n 's/^ready //p' "$work/ready")"

set -a
# shellcheck disable=SC1091
. "$work/env"
set +a
export GST_PLUGIN_PATH="$target${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"

uris=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do uris+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#uris[@]} -gt 0 ] || uris=(amazonmusic://track/B0EMUHD001)

"$target/amzmusic-play" --wav "${AMZMUSIC_DEMO_WAV:-$PWD/amzmusic-demo.wav}" "$@" "${uris[@]}"
