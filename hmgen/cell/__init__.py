"""The HM-LSTM cell: the float reference, its fast GPU form, and the integer engine (scheme.py: its number
formats; integer.py: in torch, any device; integer_numba.py: the same integers compiled for the CPU)."""
