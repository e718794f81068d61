#!/usr/bin/env bash
# Build the sdist, then two wheels from it, and run the conformance suite against each wheel
# installed into a fresh venv, from outside the source tree (so the wheel is what gets imported):
#   compiled  - built with the C compiler present: the ambassador's Cython request path
#   python    - built with SIDECARS_NO_COMPILE=1: the pure Python request path, as on a machine
#               without a compiler
# The wheels and the sdist are left in dist/ (DIST_DIR). Run from .ci/run, or by hand after it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DIST="${DIST_DIR:-$ROOT/dist}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf '[wheel.sh] %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# A build's chatter goes to a file, shown only when the build fails.
quiet() {
  "$@" >"$work/out.log" 2>&1 || { cat "$work/out.log" >&2; return 1; }
}

mkdir -p "$DIST"
rm -f "$DIST"/sidecars-*.tar.gz "$DIST"/sidecars-*.whl
log "sdist"
quiet "$PYTHON" -m build --sdist --outdir "$work/sdist" "$ROOT"
sdist="$(ls "$work"/sdist/sidecars-*.tar.gz)"
cp "$sdist" "$DIST/"

# Each wheel from its own unpacked copy of the sdist, as pip builds one on a user's machine.
build_wheel() {  # engine
  mkdir -p "$work/src-$1"
  tar -xzf "$sdist" -C "$work/src-$1" --strip-components=1
  if [[ "$1" == python ]]; then
    SIDECARS_NO_COMPILE=1 quiet "$PYTHON" -m build --wheel --outdir "$work/wheel-$1" "$work/src-$1"
  else
    quiet "$PYTHON" -m build --wheel --outdir "$work/wheel-$1" "$work/src-$1"
  fi
  ls "$work/wheel-$1"/sidecars-*.whl
}

# The tests, without the source tree: only tests/ and a pytest config with no `pythonpath`.
mkdir -p "$work/run"
cp -r "$ROOT/tests" "$work/run/"
awk '/^\[tool\.pytest\.ini_options\]/ { on = 1; print; next } /^\[/ { on = 0 } on && !/^pythonpath/' \
  "$ROOT/pyproject.toml" >"$work/run/pyproject.toml"

# These tests need pytest and its plugins from the test extra, nothing else of it.
mapfile -t runners < <("$PYTHON" -c 'import sys, tomllib
test = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["test"]
print("\n".join(r for r in test if r.startswith("pytest")))' "$ROOT/pyproject.toml")

for engine in compiled python; do
  log "wheel ($engine request path)"
  wheel="$(build_wheel "$engine")"
  cp "$wheel" "$DIST/"
  venv="$work/venv-$engine"
  python3 -m venv "$venv"
  log "fresh venv with $(basename "$wheel")"
  quiet "$venv/bin/pip" install "$wheel" "${runners[@]}" "$ROOT/examples/portwatch"
  cd "$work/run"
  "$venv/bin/python" - "$engine" <<'EOF'
import sys
import sidecars
from sidecars.ambassador import engine

assert sidecars.__file__.startswith(sys.prefix), f"sidecars imported from {sidecars.__file__}, not the wheel"
_, name, why = engine.select("auto")
assert name == sys.argv[1], f"the {sys.argv[1]} wheel chose the {name} request path: {why}"
print(f"[wheel.sh] {sidecars.__file__}: request path {name} ({why})", file=sys.stderr)
EOF
  # The pure wheel has no compiled twin: the tests that need one are not for it.
  select=()
  [[ "$engine" == python ]] && select=(-k "not compiled")
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -p no:randomly "${select[@]}" \
    tests/unit/core/test_conformance.py \
    tests/integration/tailer/test_tailer_files.py::TestTailerConformance \
    tests/integration/ambassador/test_process.py::TestAmbassadorConformance \
    tests/integration/adapter/test_adapter.py::TestAdapterConformance \
    tests/unit/ambassador/test_engine.py \
    tests/integration/ambassador/test_protocol.py
  cd "$ROOT"
done
log "built: $(cd "$DIST" && ls sidecars-*.tar.gz sidecars-*.whl | tr '\n' ' ')"
