#!/usr/bin/env bash
# Copy the training data into the checkout's git-ignored data/ (../shared does not travel to the GPU
# machine; a carried path does) and print what each carry would weigh against the 64 MiB limit.
#
#   benchmarks/gpu/prepare.sh [english|ptb|all]     (default all)
#
#   data/english/   english.{gutenberg,technical,wikipedia}.train.txt.xz + english.valid.txt.xz
#                   (hmgen reads .xz directly; file names with train/valid make the splits)
#   data/ptb/       ptb.char.{train,valid,test}.txt  (corpus spec ptb:data/ptb)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared/data/text}
what=${1:-all}
git check-ignore -q data/english || { echo "prepare: data/ is not git-ignored: add it to .gitignore first" >&2; exit 1; }

if [[ $what == english || $what == all ]]; then
    mkdir -p data/english
    cp -u "$SHARED"/english/english.{gutenberg,technical,wikipedia}.train.txt.xz "$SHARED"/english/english.valid.txt.xz data/english/
fi
if [[ $what == ptb || $what == all ]]; then
    mkdir -p data/ptb
    cp -u "$SHARED"/ptb/ptb.char.{train,valid,test}.txt data/ptb/
fi

mib() { echo "scale=1; $1 / 1048576" | bc; }
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "working tree that always travels: $(mib "$tree") MiB"
for d in data/english data/ptb; do
    [[ -d $d ]] || continue
    s=$(du -sb "$d" | cut -f1)
    left=$(( 64 * 1048576 - tree - s ))
    echo "carry [\"$d\"]: $(mib "$s") MiB -> call total $(mib $((tree + s))) MiB of 64; $(mib "$left") MiB left for a checkpoint"
done
