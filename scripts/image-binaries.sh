#!/usr/bin/env bash
# Builds the static binaries our images hold (Dockerfile.*, stage `prebuilt`): fetch, operator
# and agent, glibc linked statically (crt-static; the musl target cannot be installed on every
# machine), profile `image`, in target/image. Prints their directory on the last line.
#
# The environment is reduced to what cargo needs, so that CI's build and the one the images test
# asks for (from inside `cargo test`, whose environment differs) are the same build: cargo then
# does nothing the second time instead of rebuilding everything.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
keep=(PATH="$PATH" HOME="$HOME")
for var in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TERM_COLOR; do
  if [ -n "${!var:-}" ]; then keep+=("$var=${!var}"); fi
done
# With --target, RUSTFLAGS reach only the target's code, never build scripts or proc macros
# (which cannot be static).
env -i "${keep[@]}" RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$PWD/target/image" \
  cargo build --locked --profile image --target "$target" \
  -p fetch --bin fetch -p operator --bin operator --bin agent
echo "$PWD/target/image/$target/image"
