"""What `hmgen handwrite` does without options, chosen with benchmarks/handwriting.py --legibility (Tesseract
reads the output; figures in benchmarks/RESULTS.md). No imports: the CLI shows these in --help at no cost."""

# Probability bias (Graves 2013 §5.4): Tesseract's character error rate on handwriting-small's lines falls from
# bias 0 to 3 and rises again at 4; at 3 the writing is neater and more uniform but still a hand. A few more
# lines stall, and are redrawn (sample.py). --bias 0 gives unbiased, varied writing. With handwriting-small-2
# bias 2, 3 and 4 read alike; with handwriting-small-3 (the default since 2026-12-06) 3 and 4 do (CER 0.28 / 0.27),
# 2 a little worse (0.32).
BIAS = 3.0

# Drawing: a wider pen reads better (the error rate falls with it, on real IAM-OnDB lines too) while 3 px at
# 60 px a line still looks like a pen; a taller line within the same margin reads worse.
LINE_HEIGHT = 60.0          # pixels per line
MARGIN = 20.0               # pixels around the text
STROKE_WIDTH = 3.0          # pixels
