"""The network's integer twin for the coder: the same next-byte frequencies on every machine.

scheme.py: the number formats, tables and the quantised model (one builder for both engines);
torch_engine.py: QuantLM, in torch (any device: --device cuda); cpu_engine.py: IntegerLM, the same integers
in numba-compiled loops (the CPU, no torch: what compress runs there).
"""
