"""The metrics logged during training, aligned with their steps, as plain data."""

from __future__ import annotations

import os
from typing import Any

from ..io import atomic_write_json


class History:
    """Metrics logged during training: ``history["loss"]`` is aligned with ``history.steps``.

    A metric absent at some logged step holds ``None`` there. After :func:`train`, ``start_step``
    is the step it resumed from (0 for a fresh run) and ``end_step`` the step the model is at.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.records: dict[str, list[Any]] = {}
        self.start_step = 0
        self.end_step = 0

    def append(self, step: int, values: dict[str, Any]) -> None:
        for key in values:
            if key not in self.records:
                self.records[key] = [None] * len(self.steps)
        self.steps.append(int(step))
        for key, column in self.records.items():
            column.append(values.get(key))

    def __getitem__(self, key: str) -> list[Any]:
        if key == "step":
            return self.steps
        if key not in self.records:
            raise KeyError(f"no metric {key!r}; logged: {sorted(self.records)}")
        return self.records[key]

    def __contains__(self, key: str) -> bool:
        return key == "step" or key in self.records

    def __len__(self) -> int:
        return len(self.steps)

    def keys(self) -> list[str]:
        return list(self.records)

    def last(self, key: str) -> Any:
        return self[key][-1]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.steps, **self.records}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        if not isinstance(d, dict) or not isinstance(d.get("step"), list):
            raise ValueError("the history is malformed: expected a dict with a 'step' list")
        n = len(d["step"])
        bad = [k for k, v in d.items() if not isinstance(k, str) or not isinstance(v, list) or len(v) != n]
        if bad or not all(isinstance(s, int) and not isinstance(s, bool) for s in d["step"]):
            raise ValueError(f"the history is malformed: columns {bad or ['step']} are not lists of {n} entries")
        h = cls()
        h.steps = list(d["step"])
        h.records = {k: list(v) for k, v in d.items() if k != "step"}
        return h

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the history as JSON."""
        atomic_write_json(path, self.to_dict())
