#!/usr/bin/env bash
# Regenerates examples/ from the bundled model: every file here is real output of these commands.
set -euo pipefail
cd "$(dirname "$0")"
hmgen=${HMGEN:-hmgen}
for t in 0.5 0.8 1.0; do
  $hmgen sample -m english-small-3 --prime "The " -n 600 --temperature "$t" --seed 1 -q > "sample-english-small-3-t$t.txt"
done
$hmgen sample -m english-small-3 --prime "In 1905, " -n 600 --top-p 0.9 --seed 2 -q > sample-english-small-3-top-p0.9.txt
$hmgen models > models.txt
# where each layer's boundary detector fires (terminal view captured without colours, and the SVG)
$hmgen boundaries "the quick brown fox jumps over the lazy dog" -m english-small-3 --width 80 -o boundaries.svg > boundaries.txt
# handwriting with the defaults (bundled handwriting-small-3, bias 3, 3 px pen; PNGs are hmgen's own rasterisation
# of the same strokes)
$hmgen handwrite "hello world" --seed 1 -o handwriting-hello-world.svg --png handwriting-hello-world.png
$hmgen handwrite "The quick brown fox jumps over the lazy dog" --width 22 --seed 2 -o handwriting-quick-brown-fox.svg --png handwriting-quick-brown-fox.png
$hmgen handwrite "Dear reader,

a blank line stays blank" --seed 5 -o handwriting-letter.svg --png handwriting-letter.png
$hmgen handwrite "hierarchical multiscale" --style 1 --seed 3 --color navy -o handwriting-style1.svg --png handwriting-style1.png
$hmgen handwrite "unbiased sample" --bias 0 --seed 4 -o handwriting-bias0.svg --png handwriting-bias0.png
