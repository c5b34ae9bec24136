#!/usr/bin/env bash
# Tests that bnb-sys finds libbnb through pkg-config when BNB_LIB_DIR is unset: writes a bnb.pc
# for LIB_DIR into a temporary directory, builds the quickstart example with only
# PKG_CONFIG_PATH pointing there, and runs it with no LD_LIBRARY_PATH (the rpath must come from
# the .pc's lib dir). Then checks that a missing package is reported as a build warning.
#
# Usage: bindings/rust/scripts/test_pkg_config.sh LIB_DIR    (the directory of libbnb.so)
# Environment: CARGO_TARGET_DIR (default: a directory in the temporary one), KEEP_TMP=1.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 LIB_DIR" >&2; exit 2; }
LIB_DIR=$(cd "$1" && pwd)
RUST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$RUST_DIR/../.." && pwd)
fail() { echo "test_pkg_config: FAILED: $*" >&2; exit 1; }
[[ -e "$LIB_DIR/libbnb.so" ]] || fail "$LIB_DIR/libbnb.so not found"
command -v pkg-config >/dev/null || fail "pkg-config is not installed"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bnb-pkgconfig.XXXXXX")
if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
mkdir -p "$TMP/pc" "$TMP/empty"
cat >"$TMP/pc/bnb.pc" <<PC
prefix=$TMP/prefix
libdir=$LIB_DIR
includedir=$REPO/include

Name: bnb
Description: bnb for the bnb-sys pkg-config test
Version: 0.1.0
Libs: -L\${libdir} -lbnb
Cflags: -I\${includedir}
PC

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TMP/target}"
cd "$RUST_DIR"
unset BNB_LIB_DIR BNB_INCLUDE_DIR LD_LIBRARY_PATH
export PKG_CONFIG_PATH="$TMP/pc"

log="$TMP/build.log"
cargo build --offline --quiet -p bnb --example quickstart 2>"$log" || { cat "$log"; fail "building with pkg-config"; }
! grep -q "found no bnb" "$log" || { cat "$log"; fail "the build script did not find bnb.pc"; }
exe="$CARGO_TARGET_DIR/debug/examples/quickstart"
readelf -d "$exe" | grep -E "R(UN)?PATH" | grep -qF "$LIB_DIR" \
  || { readelf -d "$exe" | grep -E "R(UN)?PATH"; fail "no rpath to $LIB_DIR from bnb.pc"; }
"$exe" >/dev/null || fail "the example built through pkg-config does not run"
echo "pkg-config: linked and ran against $LIB_DIR"

# Nothing to find: a warning that says so (the library itself builds; linking is the user's).
PKG_CONFIG_PATH="$TMP/empty" PKG_CONFIG_LIBDIR="$TMP/empty" \
  cargo build --offline -p bnb-sys 2>"$log" || { cat "$log"; fail "building bnb-sys without bnb.pc"; }
grep -q "BNB_LIB_DIR is unset and pkg-config found no bnb" "$log" \
  || { cat "$log"; fail "no warning when pkg-config finds no bnb"; }
echo "pkg-config: a missing bnb.pc is reported"
echo "test_pkg_config: passed"
