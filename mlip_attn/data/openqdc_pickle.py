"""Safe loading of openQDC's ``props.pkl``: a restricted unpickler that only rebuilds builtin
containers and numpy arrays; any other global in the pickle is refused before it is called."""
from __future__ import annotations

import builtins
import collections
import io
import pickle
from pathlib import Path

import numpy as np

from .io import DataFileError

__all__ = ["OpenQDCError", "RestrictedUnpickler", "load_props", "decode_prop"]


class OpenQDCError(DataFileError):
    """An openQDC dataset directory that cannot be read; the message names the path."""


def _numpy_globals() -> dict:
    """The numpy callables an ndarray / dtype / scalar pickle needs, taken from numpy itself."""
    arr = np.arange(2)
    reconstruct = arr.__reduce__()[0]
    scalar = np.int32(1).__reduce__()[0]
    frombuffer = arr.__reduce_ex__(5)[0]
    found = {}
    for prefix in ("numpy.core", "numpy._core"):     # numpy 1.x and 2.x module names
        found[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{prefix}.multiarray", "scalar")] = scalar
        found[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    return found


_SAFE_BUILTINS = {name: getattr(builtins, name) for name in
                  ("list", "dict", "tuple", "set", "frozenset", "str", "bytes",
                   "int", "float", "complex", "bool")}


def _latin1_bytes(text, encoding="latin1"):
    """What protocol-0/2 pickles call (``_codecs.encode``) to rebuild bytes; latin-1 only."""
    if str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return str(text).encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds builtin containers, numpy arrays, dtypes and scalars
    (numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` names, pickle protocols 2-5).

    Every other global (``os.system``, ``builtins.eval``, arbitrary classes) raises
    `pickle.UnpicklingError` naming it, before anything is called.
    """

    _allowed = None

    def find_class(self, module, name):
        if RestrictedUnpickler._allowed is None:
            allowed = _numpy_globals()
            for key, obj in _SAFE_BUILTINS.items():
                allowed[("builtins", key)] = obj
                allowed[("__builtin__", key)] = obj
            allowed[("collections", "OrderedDict")] = collections.OrderedDict
            allowed[("_codecs", "encode")] = _latin1_bytes
            RestrictedUnpickler._allowed = allowed
        obj = RestrictedUnpickler._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only builtin containers and numpy "
                f"arrays are allowed in an openQDC props.pkl")
        return obj


def load_props(path) -> dict:
    """Load an openQDC ``props.pkl`` with `RestrictedUnpickler`; raise `OpenQDCError` on failure."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OpenQDCError(f"{path}: cannot read props.pkl ({exc})") from exc
    try:
        props = RestrictedUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as exc:
        raise OpenQDCError(f"{path}: unsafe or unreadable pickle: {exc}") from exc
    except Exception as exc:  # truncated / garbage pickles raise many types
        raise OpenQDCError(f"{path}: unreadable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(props, dict):
        raise OpenQDCError(f"{path}: expected a dict in props.pkl, found {type(props).__name__}")
    return props


def decode_prop(value):
    """openQDC stores string props as ``np.unique(x, return_inverse=True)``; undo that."""
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray)
            and value[1].dtype.kind in "iu"):
        uniques = np.asarray(value[0])
        return uniques[value[1].reshape(-1)]
    return np.asarray(value)
