# Sourced by the scripts: npm's wasm-opt and cargo's binaries first on PATH.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$root/node_modules/.bin:$HOME/.cargo/bin:$PATH"

# The size build (docs/size.md), for scripts/build and the browser tests alike: runs the
# command given (wasm-pack build or cargo test, for wasm32) with std rebuilt for size and
# panics that trap at once, without their message, location or Debug formatting. These
# are nightly options, allowed on the pinned stable toolchain (rust-toolchain.toml, with
# rust-src) by RUSTC_BOOTSTRAP; std is built into a target directory of its own, so other
# builds never invalidate it. SIZE_EXTRA_RUSTFLAGS adds flags (the tests need one).
size_build() {
  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/wasm-size" \
    RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none ${SIZE_EXTRA_RUSTFLAGS:-}" \
    "$@" -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
}
