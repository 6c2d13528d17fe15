"""The HM-LSTM cell: the float reference (reference.py) and its fast GPU form (fast.py). Its integer twin for
compression lives with the coder, in hmgen.archive.engine."""
