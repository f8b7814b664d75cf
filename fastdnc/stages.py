"""Progress of a long analysis, one line per stage on stderr.

After training, an experiment spends seconds to minutes on spectra, theory tables and figures.
:class:`Stages` names each step as it starts and says how long it took, so a terminal is never
silent for minutes::

    relu_mse 2/5: analysis 1/4 layer Hessians and theory rows … 3.1 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stages:
    """``with stages("layer Hessians"): ...`` prints ``<label>: analysis i/n layer Hessians … t s``.

    Args:
        label: what the analysis belongs to (the progress bar's label, e.g. ``"relu_mse 2/5"``).
        total: how many stages there will be (shown as ``i/n``).
        enabled: print nothing when false (``progress=False``); the timings are still kept.
    """

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        index = len(self.seconds) + 1
        if self.enabled:
            print(f"{self.label}: analysis {index}/{self.total} {name} …", end="", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=sys.stderr, flush=True)
            raise
        self.seconds[name] = time.perf_counter() - t0
        if self.enabled:
            print(f" {self.seconds[name]:.1f} s", file=sys.stderr, flush=True)
