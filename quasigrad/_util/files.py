"""Files written atomically: a reader sees either the old file or the whole new one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Union

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_torch_save", "jsonable"]

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so that readers see
    either the old file or the whole new one.

    Args:
        path: the file to write; its directory must exist.
        data: the file's new contents.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file readable by its owner only; give it the mode any new file
        # of the user gets (0o666 less the umask), as open(path, "w") would.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _default_mode() -> int:
    """`0o666` less the process's umask: the mode of a file created by `open(path, "w")`."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON with sorted keys, atomically.

    Args:
        path: the file to write.
        obj: anything `jsonable` turns into JSON (non-finite
            floats become `null`, tensors lists).
    """
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """`torch.save` through a temporary file and a rename (for checkpoints).

    Args:
        obj: what to save.
        path: the file to write.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def jsonable(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps` accepts and that keeps no NaN or infinity.

    Args:
        obj: nested dicts, lists and tuples of numbers, strings, tensors or arrays.

    Returns:
        The same structure with dict keys as strings, tuples as lists, tensors and arrays as
        (nested) lists or numbers, and non-finite floats as None.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return obj
