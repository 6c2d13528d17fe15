"""How well does method 8's running payload forecast its final size? (the data behind `gives_up` in
hmgen/archive/format.py; benchmarks/RESULTS.md, "method 8 gives up when it cannot win")

    python benchmarks/give_up_forecast.py data/corpora/alice29.txt data/corpora/bible.txt@0:1048576 ...

Every FILE[@START:END] is one block (after the format's transform): it is coded by method 9 and by method 8 in full
(never stopping), method 8's payload noted every CHECK_EVERY steps. One JSON row per block: both sizes and CPU
seconds, and at a quarter, half and three quarters of the steps the two forecasts divided by method 8's final
size: `scaled` (payload so far x steps / steps done) and `rule` (gives_up's: the growth over the last half of
the steps done, carried to the end), and where gives_up stops (both of its rules as the encoder asks them: the forecast
from GIVE_UP_MIN bytes on, and the pace against method 9's costs).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hmgen.archive import format as F
from hmgen.archive import methods
from hmgen.archive.api import engines


def main() -> None:
    q, _ = engines().get(None)
    for spec in sys.argv[1:]:
        path, _, span = spec.partition("@")
        data = Path(path).read_bytes()
        if span:
            a, b = (int(x) for x in span.split(":"))
            data = data[a:b]
        _, coded = methods.forward(data)
        n = len(coded)
        m = F.lanes_for(n, F.DEFAULT_LANES, None)
        t0 = time.process_time()
        costs = []
        nine = len(F.code_cm(None, n, n, True, data=coded, network=False, costs=costs))
        t9 = time.process_time() - t0
        sizes = {0: 0}
        t0 = time.process_time()
        eight = len(F.code_cm(q, m, n, True, data=coded, give_up=lambda t, b: sizes.__setitem__(t, b)))
        t8 = time.process_time() - t0
        rule = F.gives_up(m, n, lambda: (nine, costs[0]))
        stops = next((t for t in sorted(sizes)[1:] if rule(t, sizes[t])), None)
        row = {"block": spec, "bytes": n, "steps": m, "size8": eight, "size9": nine, "size9/size8": round(nine / eight, 4),
               "cpu8_s": round(t8, 1), "cpu9_s": round(t9, 1), "rule_applies": n >= F.GIVE_UP_MIN,
               "stops_at_step": stops}
        for f in (0.25, 0.5, 0.75):
            t = min(sizes, key=lambda s: abs(s - f * m))
            row[f"scaled@{f}"] = round(sizes[t] * m / max(t, 1) / eight, 4)
            row[f"rule@{f}"] = round(F.forecast(sizes, t, m) / eight, 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
