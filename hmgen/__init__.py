"""hmgen: the Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017) as a tool and a library."""
__version__ = "0.1.0"
