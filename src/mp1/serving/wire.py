"""The wire format of `mp1 serve`: msgpack with numpy arrays as typed byte strings.

An array travels as `{"__ndarray__": true, "dtype": "<f4", "shape": [...], "data": bytes}`;
only numeric and boolean dtypes are accepted, so a frame can carry numbers and nothing that
executes. Needs numpy and msgpack only, so robot-side code can use it without torch.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ARRAY_KEY = "__ndarray__"
ALLOWED_KINDS = "biuf"  # bool, signed and unsigned integers, floats
# Observation keys that carry a pipeline's raw frames (one per camera), sent in their own dtype.
FRAME_KEYS = ("depth", "colour", "camera_poses")


class WireError(ValueError):
    """A frame that is not a valid mp1 message."""


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"arrays of dtype {value.dtype} cannot be sent")
        value = np.ascontiguousarray(value)
        return {ARRAY_KEY: True, "dtype": value.dtype.str, "shape": list(value.shape), "data": value.tobytes()}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__}")


def _decode(value: dict) -> Any:
    if not value.get(ARRAY_KEY):
        return value
    try:
        dtype = np.dtype(value["dtype"])
        shape = tuple(int(d) for d in value["shape"])
        data = value["data"]
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed array ({error})") from None
    if dtype.kind not in ALLOWED_KINDS or any(d < 0 for d in shape) or not isinstance(data, bytes):
        raise WireError(f"malformed array (dtype {dtype}, shape {shape})")
    if len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise WireError(f"array data of {len(data)} bytes does not fit dtype {dtype} and shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(frame: bytes | str) -> Any:
    if not isinstance(frame, bytes):
        raise WireError("expected a binary frame (msgpack), got text")
    try:
        return msgpack.unpackb(frame, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as error:  # msgpack raises several types for garbage bytes
        raise WireError(f"not a msgpack frame ({type(error).__name__}: {error})") from None
