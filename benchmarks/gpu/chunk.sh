#!/usr/bin/env bash
# One chunk of a resumable training run, as the GPU machine's command (see benchmarks/gpu/README.md).
#
#   benchmarks/gpu/chunk.sh NAME [hmgen train options...]     train (or resume) runs/NAME, then export
#   benchmarks/gpu/chunk.sh --fetch NAME                       export what the last call could not return
#
# 1. Files carried in under runs/NAME.in/ (from `carry.sh stage`) are joined and checked into runs/NAME.
# 2. runs/NAME/checkpoint.json present: `hmgen train --out runs/NAME --resume` (the run's own configuration
#    wins; the options given are ignored); absent: `hmgen train OPTIONS --out runs/NAME`. Either way under
#    --time-limit $LIMIT seconds (default 500: a 600 s command also loads data and evaluates at the end).
# 3. $OUT/NAME/ gets meta.tar (checkpoint.json, best.json, metrics.jsonl, SHA256SUMS, last-summary.json),
#    then checkpoint.safetensors and best.safetensors, each split into FILE.part-aa, -ab, ... when over
#    $PART_MIB MiB (default 15). At most 8 files and 62 MiB come back per call (the tool's limits);
#    the rest is listed in runs/NAME/PENDING for `--fetch` (run it right away: the machine stays warm
#    only seconds after a call, and a fresh one has no runs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT=${LIMIT:-500}
PART_MIB=${PART_MIB:-15}
PY=${PYTHON:-python3}
MAX_FILES=8
MAX_BYTES=$((62 * 1048576))   # 64 MiB together, less a margin

fetch=0
rc=0
if [[ ${1:-} == --fetch ]]; then fetch=1; shift; fi
NAME=${1:?usage: chunk.sh NAME [hmgen train options...] | chunk.sh --fetch NAME}
shift
RUN=runs/$NAME
OUT=${OUT:?OUT is not set (the device tool sets it)}

# ------------------------------------------------------------------ 1. join what was carried in
if [[ -d $RUN.in ]]; then
    J=$RUN.in/joined && mkdir -p "$J"
    find "$RUN.in" -type f ! -path "$J/*" ! -name '*.part-*' -exec cp {} "$J/" \;
    for first in $(find "$RUN.in" -name '*.part-aa'); do
        base=$(basename "${first%.part-aa}")
        cat $(find "$RUN.in" -name "$base.part-*" -printf '%f\t%p\n' | sort | cut -f2) > "$J/$base"   # by part name
    done
    (cd "$J" && sha256sum -c --quiet SHA256SUMS) || { echo "chunk: carried files fail SHA256SUMS (a group missing?)" >&2; exit 1; }
    mkdir -p "$RUN" && cp "$J"/* "$RUN/" && rm -rf "$RUN.in"
    echo "chunk: joined the carried checkpoint into $RUN"
fi

# ------------------------------------------------------------------ 2. train or resume
if [[ $fetch == 0 ]]; then
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
    mkdir -p "$RUN"
    if [[ -f $RUN/checkpoint.json ]]; then
        echo "chunk: resuming $RUN for ${LIMIT}s"
        $PY -m hmgen train --out "$RUN" --resume --time-limit "$LIMIT" --quiet --json | tee "$RUN/last-summary.json" || rc=$?
    else
        echo "chunk: starting $RUN for ${LIMIT}s: $*"
        $PY -m hmgen train "$@" --out "$RUN" --time-limit "$LIMIT" --quiet --json | tee "$RUN/last-summary.json" || rc=$?
    fi
    (( rc == 0 )) || echo "chunk: TRAINING FAILED (exit $rc); returning what there is" >&2
    # what comes back, in order: small files first, then the checkpoint, then the best model
    (cd "$RUN" && sha256sum checkpoint.safetensors checkpoint.json best.safetensors best.json 2>/dev/null > SHA256SUMS || true)
    rm -rf "$RUN/export" && mkdir -p "$RUN/export"
    small=(SHA256SUMS checkpoint.json best.json metrics.jsonl last-summary.json)
    (cd "$RUN" && tar -cf export/meta.tar $(for f in "${small[@]}"; do [[ -f $f ]] && echo "$f"; done))
    for f in checkpoint.safetensors best.safetensors; do
        [[ -f $RUN/$f ]] || continue
        if (( $(stat -c %s "$RUN/$f") > PART_MIB * 1048576 )); then
            split -b "${PART_MIB}M" -a 2 "$RUN/$f" "$RUN/export/$f.part-"
        else
            cp "$RUN/$f" "$RUN/export/"
        fi
    done
    (cd "$RUN/export" && echo meta.tar; ls | grep -E '^checkpoint\.safetensors' | sort; ls | grep -E '^best\.safetensors' | sort) > "$RUN/PENDING"
fi

# ------------------------------------------------------------------ 3. return as much as fits
[[ -f $RUN/PENDING ]] || { echo "chunk: nothing pending in $RUN" >&2; exit 1; }
mkdir -p "$OUT/$NAME"
n=0; total=0; left=()
while read -r f; do
    [[ -n $f ]] || continue
    size=$(stat -c %s "$RUN/export/$f")
    if (( ${#left[@]} == 0 && n < MAX_FILES && total + size <= MAX_BYTES )); then
        cp "$RUN/export/$f" "$OUT/$NAME/"; n=$((n + 1)); total=$((total + size))
    else
        left+=("$f")
    fi
done < "$RUN/PENDING"
printf '%s\n' "${left[@]+"${left[@]}"}" | grep . > "$RUN/PENDING" || : > "$RUN/PENDING"

echo "chunk: returned $n file(s), $((total / 1048576)) MiB, under \$OUT/$NAME:"
ls -l "$OUT/$NAME"
if [[ -s $RUN/PENDING ]]; then
    echo "chunk: STILL PENDING ($(wc -l < "$RUN/PENDING") files): run 'benchmarks/gpu/chunk.sh --fetch $NAME' next, at once"
else
    echo "chunk: everything returned"
fi
if [[ -f $RUN/metrics.jsonl ]]; then
    echo "chunk: last metrics:"
    grep -v '"event"' "$RUN/metrics.jsonl" | grep '"valid_bpc"' | tail -n 3 || true
    tail -n 2 "$RUN/metrics.jsonl"
fi
exit $rc
