"""Load untrusted pickles (CIFAR batch files, Kaggle test sets) without running arbitrary code.

A pickle can name any importable callable and have it called on load. `safe_load` admits only what
numpy arrays and plain containers need; anything else is refused before it is called.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Sequence

# (module, name) pairs a pickled numpy array needs, across numpy 1.x and 2.x module layouts.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("builtins", "bytes"),
    ("__builtin__", "bytes"),  # Python 2 module name, as protocol-2 pickles of bytes spell it
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 2 pickles of bytes are rebuilt
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list; nothing was executed."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused to load: the pickle asks for '{module}.{name}', which is not needed for numpy arrays "
            "or plain containers. Nothing was executed. Only load pickles whose origin you trust.")


def safe_load(file: BinaryIO | bytes, encoding: str = "latin1") -> Any:
    """Unpickle `file` (an open binary file or bytes) allowing only numpy arrays and plain containers.

    `encoding="latin1"` reads Python 2 pickles (the original CIFAR-10 batches) as well as Python 3 ones.
    Raises `UnsafePickleError` for a pickle that would call anything else.
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    return _RestrictedUnpickler(file, encoding=encoding).load()


def load_dict(path: str | os.PathLike, required: Sequence[str], error: type[Exception] = ValueError,
              hint: str = "") -> dict[str, Any]:
    """Safely unpickle the dict in file `path`, with bytes keys decoded to str, holding at least `required` keys.

    A pickle that would run code raises `UnsafePickleError`; a truncated or corrupt file, a non-dict or missing keys
    raise `error` with a message naming the file (and ending with `hint`).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = safe_load(f)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise error(f"{path} is truncated or corrupt ({type(err).__name__}: {err}). {hint}".rstrip()) from None
    if not isinstance(content, dict):
        raise error(f"{path}: expected a pickled dict with keys {', '.join(required)}, got {type(content).__name__}")
    content = {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}
    missing = [key for key in required if key not in content]
    if missing:
        raise error(f"{path}: missing {', '.join(missing)}; expected keys {', '.join(required)}, "
                    f"found {sorted(map(str, content))}")
    return content
