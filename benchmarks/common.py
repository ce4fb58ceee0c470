"""What the benchmark scripts share: percentiles of their timings and the `--json` ending.

Imported as `benchmarks.common` by the scripts, which put the repository root on `sys.path`
first (they run as `python benchmarks/<name>.py`).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float, *, scale: float = 1.0) -> float:
    """The `q`-th percentile of `values` times `scale` (numpy's linear interpolation); NaN
    when there are none.

    >>> percentile([0.001, 0.002, 0.003], 50, scale=1000.0), percentile([], 95)
    (2.0, nan)
    """
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float) * scale, q))


def finish(result: dict, as_json: bool) -> int:
    """The scripts' exit: with `--json` the last printed line is `result` as one JSON object."""
    if as_json:
        print(json.dumps(result))
    return 0
