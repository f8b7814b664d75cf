"""Unpickling the NumPy arrays of a data file without running anything else.

A pickle is a program. :func:`load_arrays` unpickles bytes already in memory (so no length declared
inside them can make the reader allocate more than the file holds) with only NumPy's array
reconstruction (``_reconstruct``, ``ndarray``) and ``dtype`` allowed, through wrappers: an array must
be rebuilt from NumPy's empty placeholder, its dtype must be one the format uses (no fields, no
sub-arrays), and its declared shape (at most :attr:`ArrayRules.max_entries` entries) must match the
bytes the pickle really carries before NumPy sees it. Any other global (``bytearray``, ``eval``,
``os.system``, …) is refused with :class:`pickle.UnpicklingError`.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # NumPy ≥ 2 moved the module; pickles name either
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]

# what load_arrays can raise on a corrupt or hostile pickle
UNPICKLING_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    RecursionError,
    MemoryError,
    OverflowError,
)


@dataclass(frozen=True)
class ArrayRules:
    """What a format's arrays may be: ``dtypes`` (the names its pickles write, e.g. ``"u1"``,
    ``"f4"``, ``"<i8"``), at most ``max_dims`` dimensions and ``max_entries`` entries each;
    ``what`` names the format in messages ("a CIFAR-10 batch")."""

    what: str
    dtypes: frozenset[str]
    max_entries: int
    max_dims: int = 2


def load_arrays(raw: bytes, rules: ArrayRules) -> tuple[Any, type[np.ndarray]]:
    """The unpickled object of ``raw`` and the array class its arrays have (test ``isinstance``
    against it: only arrays rebuilt by the checked reconstruction are of that class; ``.view(np.ndarray)``
    gives the plain array). Raises one of :data:`UNPICKLING_ERRORS` on a corrupt or hostile pickle."""
    allowed_dtypes = {np.dtype(n) for n in rules.dtypes}

    class CheckedArray(np.ndarray):
        def __setstate__(self, state):  # noqa: D105
            _check_state(state, rules, allowed_dtypes)
            super().__setstate__(state)

    def reconstruct(subtype, shape, dtype):
        if subtype is not CheckedArray or tuple(shape) != (0,) or dtype not in (b"b", "b"):
            raise pickle.UnpicklingError("an array reconstruction that NumPy never writes")
        return _np_reconstruct(CheckedArray, (0,), b"b")

    def make_dtype(name, align=False, copy=True):
        key = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        if key not in rules.dtypes:
            raise pickle.UnpicklingError(f"the dtype {name!r}: {rules.what} holds {sorted(rules.dtypes)}")
        return np.dtype(key)

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): CheckedArray,
        ("numpy", "dtype"): make_dtype,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            try:
                return allowed[(module, name)]
            except KeyError:
                raise pickle.UnpicklingError(
                    f"refusing to load {module}.{name}: {rules.what} needs only NumPy arrays"
                ) from None

    return Unpickler(io.BytesIO(raw), encoding="bytes").load(), CheckedArray


def _check_state(state: Any, rules: ArrayRules, dtypes: set[np.dtype]) -> None:
    if not (isinstance(state, tuple) and len(state) == 5):
        raise pickle.UnpicklingError("an array state that NumPy never writes")
    _, shape, dtype, _, raw = state
    if not (
        isinstance(shape, tuple) and len(shape) <= rules.max_dims and all(isinstance(s, int) and s >= 0 for s in shape)
    ):
        raise pickle.UnpicklingError(
            f"an array of shape {shape!r}: {rules.what} needs at most {rules.max_dims} dimensions"
        )
    if not (isinstance(dtype, np.dtype) and dtype.fields is None and dtype.subdtype is None and dtype in dtypes):
        raise pickle.UnpicklingError(f"an array of dtype {dtype!r}: {rules.what} holds {sorted(rules.dtypes)}")
    count = math.prod(shape)
    if count > rules.max_entries:
        raise pickle.UnpicklingError(
            f"an array of declared shape {shape} ({count} entries): {rules.what} holds at most {rules.max_entries}"
        )
    if not isinstance(raw, bytes) or len(raw) != count * dtype.itemsize:
        size = len(raw) if isinstance(raw, (bytes, bytearray, str)) else type(raw).__name__
        raise pickle.UnpicklingError(
            f"an array of shape {shape} that carries {size} bytes instead of {count * dtype.itemsize}"
        )
