#!/usr/bin/env bash
# Move a run's checkpoint between this machine and the GPU machine (see benchmarks/gpu/README.md).
#
#   benchmarks/gpu/carry.sh restore NAME DIR       files that came back (DIR = the tool's files_at, holding
#                                                  NAME/...) -> runs/NAME, parts joined, SHA256SUMS checked
#   benchmarks/gpu/carry.sh stage NAME [MIB]       runs/NAME -> runs/NAME.in (what a resume needs), in groups
#                                                  runs/NAME.in/1, /2, ... of at most MIB MiB each (default:
#                                                  64 MiB less the working tree less 2 MiB); prints the carry
#                                                  list of each call
set -euo pipefail
cd "$(dirname "$0")/../.."
PART_MIB=${PART_MIB:-15}
cmd=${1:?usage: carry.sh restore NAME DIR | carry.sh stage NAME [MIB]}
NAME=${2:?run name}
RUN=runs/$NAME
size() { stat -c %s "$1"; }

if [[ $cmd == restore ]]; then
    SRC=${3:?DIR: the folder the files came back in}
    [[ -d $SRC/$NAME ]] && SRC=$SRC/$NAME
    mkdir -p "$RUN/incoming"
    cp -f "$SRC"/* "$RUN/incoming/"
    chmod u+w "$RUN/incoming"/*
    cd "$RUN"
    if [[ -f incoming/meta.tar ]]; then tar -xf incoming/meta.tar -C incoming && rm incoming/meta.tar; fi
    [[ -f incoming/SHA256SUMS ]] && mv incoming/SHA256SUMS .
    for f in checkpoint.json best.json metrics.jsonl last-summary.json checkpoint.safetensors best.safetensors; do
        [[ -f incoming/$f ]] && mv incoming/$f "$f.new"
        if compgen -G "incoming/$f.part-*" > /dev/null; then
            cat $(ls incoming/$f.part-* | sort) > "$f.joined"
            if grep -q " $f\$" SHA256SUMS && [[ $(sha256sum "$f.joined" | cut -d' ' -f1) == $(grep " $f\$" SHA256SUMS | cut -d' ' -f1) ]]; then
                mv "$f.joined" "$f.new"; rm incoming/$f.part-*
            else
                rm "$f.joined"; echo "carry: $f: $(ls incoming/$f.part-* | wc -l) part(s) so far, not complete yet"
            fi
        fi
        [[ -f $f.new ]] && mv "$f.new" "$f"
    done
    rmdir incoming 2>/dev/null || true
    echo "carry: runs/$NAME now holds:"; ls -l
    sha256sum -c SHA256SUMS --ignore-missing && echo "carry: checksums OK" || echo "carry: CHECKSUMS DIFFER" >&2
    for f in $(awk '{print $2}' SHA256SUMS); do
        [[ -f $f ]] || echo "carry: $f not here yet: run 'benchmarks/gpu/chunk.sh --fetch $NAME' on the device"
    done
    exit 0
fi

if [[ $cmd == stage ]]; then
    [[ -f $RUN/checkpoint.json ]] || { echo "carry: $RUN has no checkpoint" >&2; exit 1; }
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    budget=$(( ${3:-$(( 64 - tree / 1048576 - 2 ))} * 1048576 ))
    rm -rf "$RUN.in" && mkdir -p "$RUN.in/parts"
    (cd "$RUN" && sha256sum checkpoint.safetensors checkpoint.json > "../$NAME.in/parts/SHA256SUMS")
    cp "$RUN/checkpoint.json" "$RUN.in/parts/"
    [[ -f $RUN/metrics.jsonl ]] && cp "$RUN/metrics.jsonl" "$RUN.in/parts/"
    split -b "${PART_MIB}M" -a 2 "$RUN/checkpoint.safetensors" "$RUN.in/parts/checkpoint.safetensors.part-"
    group=1; used=0
    for f in $(cd "$RUN.in/parts" && ls | sort -r); do   # small files first (reverse order puts part-* last)
        s=$(size "$RUN.in/parts/$f")
        if (( used + s > budget )); then group=$((group + 1)); used=0; fi
        mkdir -p "$RUN.in/$group" && mv "$RUN.in/parts/$f" "$RUN.in/$group/"; used=$((used + s))
    done
    rmdir "$RUN.in/parts"
    echo "carry: working tree $((tree / 1048576)) MiB; budget per call $((budget / 1048576)) MiB; $group call(s):"
    for g in $(seq 1 $group); do
        echo "  call $g: carry [\"$RUN.in/$g\"] ($(( $(du -sb "$RUN.in/$g" | cut -f1) / 1048576 )) MiB)"
    done
    echo "Carry the groups in consecutive calls on the same warm machine (each within seconds of the last);"
    echo "chunk.sh joins them when the last one is there. data/ must already be there, or add it to a call with room."
    exit 0
fi
echo "carry: unknown command $cmd" >&2; exit 2
