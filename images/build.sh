#!/usr/bin/env bash
# Build the sidecar images from one Dockerfile: sidecars/<target>:<version> for every target.
#
#   images/build.sh                 build all targets (BASE_IMAGE defaults to the Dockerfile's)
#   images/build.sh tailer adapter  build only these targets
#   images/build.sh --wheelhouse    download/build every wheel into images/wheelhouse/ first
#   images/build.sh --offline       build with no package index, from images/wheelhouse/ only
#
# Each build also writes the images' SBOM (CycloneDX JSON, the same file as /usr/share/sbom/ in the
# images) to $SBOM_DIR/sidecars-<version>.cdx.json (default dist/).
#
# The build context is a tar stream of just what the image needs (no .venv, no .git), so no
# .dockerignore is needed and the context is a few hundred KiB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ALL_TARGETS=(tailer ambassador adapter injector demo-app)
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' sidecars/__init__.py)"
REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The commit's time, so that the SBOM of the same sources is the same bytes.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
SBOM_DIR="${SBOM_DIR:-$ROOT/dist}"
SOURCE="${IMAGE_SOURCE:-https://github.com/sidecars/sidecars}"
REPO="${IMAGE_REPO:-sidecars}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
offline=0
targets=()

for arg in "$@"; do
  case "$arg" in
    --wheelhouse)
      "$PYTHON" -m pip wheel -q -w images/wheelhouse "setuptools>=77" wheel "Cython>=3.0" .
      rm -f images/wheelhouse/sidecars-*.whl ;;
    --offline) offline=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) targets+=("$arg") ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

build_args=(--network host -f images/Dockerfile
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE"
  --build-arg "OFFLINE=$offline" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH")
# The locally made Debian base (see .ci/docker.sh) when present: no registry is needed then.
if [[ -z "${BASE_IMAGE:-}" ]] && docker image inspect sidecars-base-os:bookworm >/dev/null 2>&1; then
  BASE_IMAGE=sidecars-base-os:bookworm
fi
if [[ -n "${BASE_IMAGE:-}" ]]; then
  build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

context="$(mktemp)"
trap 'rm -f "$context" "$context.log"' EXIT
files=(pyproject.toml LICENSE setup.py sidecars images/Dockerfile images/rootfs.py images/sbom.py images/wheelhouse)
[[ -f README.md ]] && files+=(README.md)
tar --exclude='__pycache__' --exclude='*.pyc' --exclude='*.so' -cf "$context" "${files[@]}"

for target in "${targets[@]}"; do
  tag="$REPO/$target:$VERSION"
  echo "[build.sh] $tag" >&2
  if ! docker build "${build_args[@]}" --target "$target" -t "$tag" - <"$context" >"$context.log" 2>&1; then
    cat "$context.log" >&2
    exit 1
  fi
done

# The SBOM beside the images: copied out of the first one (no container is started; there is no shell).
mkdir -p "$SBOM_DIR"
sbom="$SBOM_DIR/sidecars-$VERSION.cdx.json"
container="$(docker create "$REPO/${targets[0]}:$VERSION")"
docker cp "$container:/usr/share/sbom/sidecars.cdx.json" "$sbom.tmp" >/dev/null
docker rm "$container" >/dev/null
mv "$sbom.tmp" "$sbom"
echo "[build.sh] SBOM: $sbom" >&2

for target in "${targets[@]}"; do
  docker image inspect -f "{{index .RepoTags 0}} {{.Size}}" "$REPO/$target:$VERSION"
done | awk '{ printf "[build.sh] %-32s %6.1f MB\n", $1, $2 / 1e6 }' >&2
