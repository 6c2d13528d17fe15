"""What COPY skipping saves in the integer engine: QuantLM.step with copied rows skipped against dense=True.

    python benchmarks/copy_speed.py MODEL [BYTES] [LANES]        (default 131072 bytes in 64 lanes)

Feeds the first BYTES of the English validation split (../shared) as LANES contiguous lanes, 1 torch thread,
and prints both times. Both modes give identical integers (tests/test_compress.py).
"""
import lzma
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hmgen.archive.engine.torch_engine import QuantLM  # noqa: E402
from hmgen.modelio import load_model                    # noqa: E402

VALID = ROOT.parent / "shared/data/text/english/english.valid.txt.xz"


def main():
    torch.set_num_threads(1)
    name = sys.argv[1]
    nbytes = int(sys.argv[2]) if len(sys.argv) > 2 else 131072
    lanes = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    q = QuantLM(load_model(name).model)
    data = lzma.open(VALID).read(nbytes)
    m = nbytes // lanes
    grid = np.frombuffer(data[:m * lanes], np.uint8).reshape(lanes, m).astype(np.int64)
    seconds = {}
    for dense in (False, True):
        st, prev = q.initial_state(lanes), torch.full((lanes,), 10)
        t = time.perf_counter()
        for k in range(m):
            _, st = q.step(prev, st, dense=dense)
            prev = torch.from_numpy(grid[:, k])
        seconds[dense] = time.perf_counter() - t
    print(f"{name}: {nbytes:,} bytes in {lanes} lanes, 1 thread: COPY skipped {seconds[False]:.2f} s, "
          f"dense {seconds[True]:.2f} s, skipping is {seconds[True] / seconds[False]:.2f}x as fast")


if __name__ == "__main__":
    main()
