#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), builds the workspace,
# and runs every test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Builds the plugins and the emulator binary the end-to-end tests start as real processes.
cargo build --workspace --all-targets --locked
# Generated test content is cached under target/ (AMZMUSIC_EMULATOR_DATA_DIR overrides).
cargo test --workspace --locked -- --test-threads=2 "$@"
