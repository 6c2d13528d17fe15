"""The HM-LSTM cell: the float reference, its fast GPU form, and the integer engine."""
