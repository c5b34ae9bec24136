#!/usr/bin/env bash
# Tests the language bindings and the installed C/C++ package against a CMake build of bnb:
#   1. Rust: cargo test (bnb-sys layout probe, safe crate incl. golden vectors, ABI coverage) + the
#      example + bnb-sys linking through pkg-config (bindings/rust/scripts/test_pkg_config.sh)
#   2. Go:   go test ./... (cgo package incl. golden vectors, ABI coverage)
#   3. cmake --install into a temporary prefix; check the layout (header, SONAME, plugins beside
#      libbnb, CMake package, pkg-config file)
#   4. build examples/c against that prefix with only find_package(bnb), run it
#   5. build examples/c against that prefix with only pkg-config, run it
#
# Usage: scripts/test_bindings.sh BUILD_DIR
# Environment: BNB_GOLDEN_DIR (default <repo>/tests/data/golden), BNB_BACKEND (passed through),
#   CARGO_TARGET_DIR (default BUILD_DIR/bindings-rust-target), KEEP_TMP=1 keeps the prefix.
# Every step must pass; the first failure stops the script with a non-zero status.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
[[ -d "$1" ]] || { echo "test_bindings: FAILED: build dir $1 does not exist" >&2; exit 1; }
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB_DIR="$BUILD_DIR/lib"
export BNB_GOLDEN_DIR="${BNB_GOLDEN_DIR:-$REPO/tests/data/golden}"

step() { printf '\n==== %s\n' "$*"; }
fail() { echo "test_bindings: FAILED: $*" >&2; exit 1; }

[[ -e "$LIB_DIR/libbnb.so" ]] || fail "$LIB_DIR/libbnb.so not found: build BUILD_DIR first"
[[ -f "$BNB_GOLDEN_DIR/manifest.json" ]] || fail "no golden vectors at $BNB_GOLDEN_DIR"
for tool in cargo go cmake pkg-config cc make readelf gzip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bnb-bindings.XXXXXX")
if [[ "${KEEP_TMP:-0}" == 1 ]]; then
  echo "keeping $TMP"
else
  trap 'rm -rf "$TMP"' EXIT
fi

# ------------------------------------------------------------------ Rust
step "rust: cargo test (BNB_LIB_DIR=$LIB_DIR)"
(
  cd "$REPO/bindings/rust"
  export BNB_LIB_DIR="$LIB_DIR" BNB_INCLUDE_DIR="$REPO/include"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BUILD_DIR/bindings-rust-target}"
  cargo test --offline --workspace
  cargo run --offline --quiet -p bnb --example quickstart
  "$REPO/bindings/rust/scripts/test_pkg_config.sh" "$LIB_DIR" # bnb-sys finding libbnb with pkg-config
)

# ------------------------------------------------------------------ Go
step "go: go test ./... (CGO_LDFLAGS -> $LIB_DIR)"
(
  cd "$REPO/bindings/go"
  export CGO_ENABLED=1
  export CGO_CFLAGS="-I$REPO/include ${CGO_CFLAGS:-}"
  export CGO_LDFLAGS="-L$LIB_DIR -Wl,-rpath,$LIB_DIR ${CGO_LDFLAGS:-}"
  export GOFLAGS="-mod=mod" GOPROXY=off GOTOOLCHAIN=local
  go vet ./...
  go test -count=1 -v ./... # -v: skipped tests and their reasons show in the log
)

# ------------------------------------------------------------------ install
PREFIX="$TMP/prefix"
step "install: cmake --install $BUILD_DIR --prefix $PREFIX"
cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$TMP/install.log" || { cat "$TMP/install.log"; fail "cmake --install"; }
LIBDIR_REL=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
LIBDIR_REL=${LIBDIR_REL:-lib}
case "$LIBDIR_REL" in /*) fail "CMAKE_INSTALL_LIBDIR is absolute ($LIBDIR_REL): cannot relocate" ;; esac
PLIB="$PREFIX/$LIBDIR_REL"
[[ -f "$PREFIX/include/bnb.h" ]] || fail "include/bnb.h not installed"
cmp -s "$PREFIX/include/bnb.h" "$REPO/include/bnb.h" || fail "installed bnb.h differs from include/bnb.h"
[[ -L "$PLIB/libbnb.so" && -L "$PLIB/libbnb.so.0" ]] || fail "libbnb.so / libbnb.so.0 links missing in $PLIB"
soname=$(readelf -d "$PLIB/libbnb.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" == libbnb.so.0 ]] || fail "SONAME is '$soname', want libbnb.so.0"
plugins=0
for built in "$LIB_DIR"/libbnb_backend_*.so; do
  [[ -e "$built" ]] || continue
  [[ -f "$PLIB/$(basename "$built")" ]] || fail "plugin $(basename "$built") not installed beside libbnb"
  plugins=$((plugins + 1))
done
[[ $plugins -gt 0 ]] || fail "no backend plugin was built in $LIB_DIR"
[[ -f "$PLIB/cmake/bnb/bnbConfig.cmake" && -f "$PLIB/cmake/bnb/bnbConfigVersion.cmake" ]] \
  || fail "CMake package files missing in $PLIB/cmake/bnb"
[[ -f "$PLIB/pkgconfig/bnb.pc" ]] || fail "bnb.pc missing in $PLIB/pkgconfig"
echo "layout ok: $(cd "$PREFIX" && find . -type f -o -type l | sort | tr '\n' ' ')"

# The installed tree must stand alone: no build dir, no plugin path from the environment.
run_installed_example() {
  local exe=$1
  ldd "$exe" >"$TMP/ldd.txt"
  if grep -q "$BUILD_DIR" "$TMP/ldd.txt"; then
    cat "$TMP/ldd.txt"
    fail "$exe resolves libraries from the build dir"
  fi
  local loaded
  loaded=$(sed -n 's/^[[:space:]]*libbnb\.so\.0 => \(.*\) (0x.*/\1/p' "$TMP/ldd.txt")
  [[ -n "$loaded" && "$(readlink -f "$loaded")" == "$(readlink -f "$PLIB/libbnb.so.0")" ]] \
    || { cat "$TMP/ldd.txt"; fail "$exe does not load the installed libbnb"; }
  env -u BNB_BACKEND_PATH -u LD_LIBRARY_PATH "$exe"
}

# ------------------------------------------------------------------ find_package(bnb)
step "example via find_package(bnb)"
cmake -S "$REPO/examples/c" -B "$TMP/example-cmake" -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF >"$TMP/cmake.log" \
  || { cat "$TMP/cmake.log"; fail "configuring examples/c"; }
found=$(sed -n 's/^bnb_DIR:PATH=//p' "$TMP/example-cmake/CMakeCache.txt")
[[ "$found" == "$PLIB/cmake/bnb" ]] || fail "find_package(bnb) found '$found', not the installed package"
cmake --build "$TMP/example-cmake" >"$TMP/build.log" || { cat "$TMP/build.log"; fail "building examples/c with CMake"; }
run_installed_example "$TMP/example-cmake/quantize_roundtrip"

# ------------------------------------------------------------------ pkg-config
step "example via pkg-config"
export PKG_CONFIG_PATH="$PLIB/pkgconfig"
echo "pkg-config --cflags --libs bnb: $(pkg-config --cflags --libs bnb)"
header_version=$(for part in MAJOR MINOR PATCH; do
  sed -n "s/^#define BNB_VERSION_$part \([0-9]*\).*/\1/p" "$PREFIX/include/bnb.h"; done | paste -sd.)
[[ "$(pkg-config --modversion bnb)" == "$header_version" ]] \
  || fail "bnb.pc says version $(pkg-config --modversion bnb), bnb.h says $header_version"
mkdir -p "$TMP/example-pc"
make -s -C "$TMP/example-pc" -f "$REPO/examples/c/Makefile" || fail "building examples/c with pkg-config"
run_installed_example "$TMP/example-pc/quantize_roundtrip"

step "test_bindings: all passed"
