#!/usr/bin/env bash
# Make the ONE folder the GPU shot carries, data/shot/ (git-ignored), sized to fit the device tool's 64 MiB
# together with the working tree; prints every size. Run it in the checkout the session was started in
# (the device tool sends that one), once before the call:
#
#   benchmarks/gpu/prepare.sh [--init DIR] [--no-wheel]
#
#   data/shot/iam/        iamondb_lines.npz + splits/ (the aligned IAM-OnDB lines; corpus iam:data/shot/iam)
#   data/shot/ptb/        ptb.char.{train,valid,test}.txt.xz  (xz: 11.7 -> 1.4 MB; corpus ptb:data/shot/ptb)
#   data/shot/english/    english.valid.txt.xz whole, the training files trimmed (the same share of each,
#                         from its start, recompressed) to what is left: the English corpus gives way first
#   data/shot/init/       --init DIR: an earlier shot's models (DIR/NAME/best.*, DIR = the unpacked tar's runs/;
#                         stored here as NAME.safetensors/.json, float16)
#                         for the warm start; they count against the limit, so the English data shrinks
#   data/shot/whl/        a cp312 constriction wheel (pip download; the GPU image has none) for the optional
#                         `compress --device cuda` step; --no-wheel skips it
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared/data}
PY=${PY:-$(command -v python3)}
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
init="" wheel=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --init) init=$2; shift 2 ;;
        --no-wheel) wheel=0; shift ;;
        *) echo "usage: prepare.sh [--init DIR] [--no-wheel]" >&2; exit 2 ;;
    esac
done
git check-ignore -q data/shot || { echo "prepare: data/ is not git-ignored: add it to .gitignore first" >&2; exit 1; }
D=data/shot
rm -rf "$D.tmp" && mkdir -p "$D.tmp"/{iam/splits,ptb,english}

cp "$SHARED"/handwriting/iamondb/iamondb_lines.npz "$D.tmp/iam/"
cp "$SHARED"/handwriting/iamondb/splits/*.txt "$D.tmp/iam/splits/"
for s in train valid test; do xz -9 -T2 -c "$SHARED/text/ptb/ptb.char.$s.txt" > "$D.tmp/ptb/ptb.char.$s.txt.xz"; done
cp "$SHARED"/text/english/english.valid.txt.xz "$D.tmp/english/"
if [[ -n $init ]]; then     # float16 weights: half the carry, the same start for a warm start
    mkdir -p "$D.tmp/init"
    PYTHONPATH=$PWD "$PY" - "$init" "$D.tmp/init" <<'PYEOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from hmgen.modelio import file_sha256
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for desc in sorted(src.glob("*/best.json")):
    w, name = desc.with_suffix(".safetensors"), desc.parent.name
    if not w.is_file() or "." in name:        # NAME.2: a restarted run's first attempt
        continue
    t = {k: (v.half() if v.is_floating_point() and v.numel() >= 4096 else v) for k, v in load_file(str(w)).items()}
    save_file(t, str(dst / f"{name}.safetensors"))
    meta = json.loads(desc.read_text())
    meta.update(weights_sha256=file_sha256(dst / f"{name}.safetensors"), weights_dtype="float16")
    (dst / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"init {name}: {(dst / f'{name}.safetensors').stat().st_size / 2**20:.1f} MiB")
PYEOF
fi
if [[ $wheel == 1 ]]; then
    mkdir -p "$D.tmp/whl"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$D.tmp/whl" "constriction==0.5.0" || { echo "prepare: no constriction wheel (the compress step will be skipped)" >&2; rmdir "$D.tmp/whl" 2>/dev/null || true; }
fi

mib() { echo "scale=1; $1 / 1048576" | bc; }
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
fixed=$(du -sb "$D.tmp" | cut -f1)
margin=$((2 * 1048576))     # the tree grows between now and the call
room=$((64 * 1048576 - tree - fixed - margin))
files=("$SHARED"/text/english/english.{gutenberg,technical,wikipedia}.train.txt.xz)
whole=$(du -cb "${files[@]}" | tail -1 | cut -f1)
if (( room < 4 * 1048576 )); then
    echo "prepare: only $(mib $room) MiB left for English training text: carry fewer --init models" >&2; exit 1
fi
if (( whole <= room )); then
    cp "${files[@]}" "$D.tmp/english/"
    echo "english: all training files ($(mib $whole) MiB)"
else   # the same share of every file, from its start; 0.94: xz -6 packs ~4% worse than the sources (measured)
    for f in "${files[@]}"; do
        raw=$(xz --robot -l "$f" | awk '/^totals/ {print $5}')
        keep=$(echo "$raw * $room * 94 / 100 / $whole" | bc)
        { xz -dc "$f" || true; } | head -c "$keep" | xz -6 -T2 > "$D.tmp/english/$(basename "$f")"
        echo "english: $(basename "$f"): first $keep of $raw bytes"
    done
fi
size=$(du -sb "$D.tmp" | cut -f1)
(( tree + size <= 64 * 1048576 - 1048576 )) || { echo "prepare: $(mib $((tree + size))) MiB: over 63 MiB (left in $D.tmp)" >&2; exit 1; }
rm -rf "$D" && mv "$D.tmp" "$D"
echo "working tree $(mib $tree) MiB + $D $(mib $size) MiB = $(mib $((tree + size))) MiB of 64"
du -sh "$D"/* | sed 's/^/  /'
