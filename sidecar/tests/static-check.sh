#!/usr/bin/env bash
# Proves the sidecar binary is static and runs in an empty root (no libc, no
# /etc, no /tmp): as the gateway's binary (`version`) and as the workload's
# PID 1 (`shim -- ... version`, the shim running a command in that root).
# Needs root for chroot; prints what it checked. Usage: static-check.sh BINARY
set -euo pipefail
bin=${1:?usage: static-check.sh BINARY}
fail() { echo "static-check: FAIL: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "$bin is not an executable"
headers=$(readelf --program-headers --dynamic "$bin")
grep -q 'INTERP' <<<"$headers" && fail "$bin asks for a dynamic loader (PT_INTERP)"
grep -q '(NEEDED)' <<<"$headers" && fail "$bin needs shared libraries: $(grep '(NEEDED)' <<<"$headers")"
echo "static-check: $bin has no interpreter and no NEEDED libraries"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp "$bin" "$root/hatchway-sidecar"
[ -z "$(find "$root" -name 'libc*')" ] || fail "the empty root has a libc"

out=$(chroot "$root" /hatchway-sidecar version) || fail "version failed in an empty root"
[[ "$out" == hatchway-sidecar\ * ]] || fail "unexpected version output: $out"
echo "static-check: runs in an empty root: $out"

# The shim in that root, running the binary itself as the workload.
mkdir -p "$root/log"
out=$(chroot "$root" /hatchway-sidecar shim --log-dir /log --usage-interval 0 --spawn-disabled -- /hatchway-sidecar version) \
  || fail "the shim failed in an empty root"
[[ "$out" == *hatchway-sidecar* ]] || fail "the shim's workload printed: $out"
grep -q 'hatchway-sidecar' "$root/log/stdout.txt" || fail "the shim did not tee to /log/stdout.txt"
[ "$(cat "$root/log/exit-code")" = 0 ] || fail "exit code $(cat "$root/log/exit-code")"
echo "static-check: the shim runs a workload in an empty root and records exit code 0"
