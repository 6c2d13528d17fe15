#!/usr/bin/env bash
# The compressors benchmarks/compress.py compares hmgen with, installed or built beside the project (nothing here
# is committed or imported: paq8px is GPL, benchmarked only). Debian: zpaq, 7-Zip (PPMd), brotli from packages;
# paq8px built from its source into build/anchors/ (an ignored folder). PAQ8PX_SRC: a local clone to build from
# instead of GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q zpaq p7zip-full brotli >/dev/null
fi
mkdir -p build/anchors
if [ ! -x build/anchors/paq8px/build/paq8px ]; then
  rm -rf build/anchors/paq8px
  git clone -q "${PAQ8PX_SRC:-https://github.com/hxim/paq8px}" build/anchors/paq8px
  (cd build/anchors/paq8px/build && bash build-linux-with-gcc.sh)
fi
build/anchors/paq8px/build/paq8px 2>&1 | head -1
