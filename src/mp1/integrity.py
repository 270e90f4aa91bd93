"""Content checksums, written with every checkpoint, policy file and demonstration array and
checked when it is read, so that damage on disk is an error instead of a silently different run."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch


def content_digest(value: Any) -> str:
    """sha256 over a nested value: tensors and arrays by dtype, shape and bytes; dicts in key
    order (a "checksum" key, where the digest itself is kept, left out); lists and tuples in
    order; anything else by repr."""
    digest = hashlib.sha256()

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, np.ndarray):
            array = np.ascontiguousarray(item)
            digest.update(f"array:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.data)
        elif isinstance(item, dict):
            for key in sorted(item, key=repr):
                if key != "checksum":
                    digest.update(repr(key).encode())
                    walk(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(f"{type(item).__name__}:{len(item)}".encode())
            for element in item:
                walk(element)
        else:
            digest.update(repr(item).encode())

    walk(value)
    return digest.hexdigest()
