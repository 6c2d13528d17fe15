"""The HM-LSTM cell: the float reference (reference.py) and its fast GPU form (fast.py). Its integer twin for
compression lives with the coder, in hmgen.archive.engine."""

# --arch: the HM-LSTM, or the LSTM baseline (the same modules, no boundaries). Here, not in reference.py, so that
# torch-free code (the CPU coder) can name them.
HMLSTM_ARCH, LSTM_ARCH = ARCHS = ("hmlstm", "lstm")

# Layer normalisation's epsilon (torch.nn.LayerNorm's default): the float cell's and the integer engines' (which
# scale it into their units), so the two normalise alike.
LN_EPS = 1e-5
