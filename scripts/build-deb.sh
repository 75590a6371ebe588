#!/usr/bin/env bash
# Builds Klaxon's Debian package with `cargo deb` (crates.io cargo-deb, installed if missing):
# the release binary, then the man page and shell completions it generates from its own command
# line, then the package. Prints the path of the .deb last. Arguments go to `cargo deb`, such as
# --fast (lighter compression: a larger .deb, built in a fifth of the time).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! command -v cargo-deb >/dev/null; then
    # A one-time cost: cargo keeps it in ~/.cargo/bin.
    cargo install cargo-deb --locked
fi

cargo build --release --locked
klaxon="$CARGO_TARGET_DIR/release/klaxon"
# Where Cargo.toml's [package.metadata.deb] assets look: cargo-deb maps `target/release/` to
# $CARGO_TARGET_DIR/release.
generated="$CARGO_TARGET_DIR/release/packaging"
mkdir -p "$generated"
"$klaxon" man | gzip -9n >"$generated/klaxon.1.gz"
"$klaxon" completions bash >"$generated/klaxon.bash"
"$klaxon" completions zsh >"$generated/_klaxon"
"$klaxon" completions fish >"$generated/klaxon.fish"

deb="$CARGO_TARGET_DIR/debian/klaxon.deb"
mkdir -p "$(dirname "$deb")"
cargo deb --no-build --locked --output "$deb" "$@" >&2
echo "$deb"
