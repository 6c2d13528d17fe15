"""Text: corpora, evaluation in BPC, sampling, boundary views."""
