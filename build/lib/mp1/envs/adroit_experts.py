"""The DAPG expert policies for the Adroit tasks: import from the public pickles, run in numpy.

The experts are the mjrl ``MLP`` policies of aravindr93/hand_dapg (``dapg/policies/<task>-v0
.pickle``, Apache-2.0; Rajeswaran et al., RSS 2018), which users fetch themselves. Those files
are pickles of mjrl objects holding torch tensors in torch's legacy storage format, so loading
them the ordinary way needs mjrl, an old torch, and trust: unpickling runs whatever the file
names. :func:`import_experts` reads them instead with a restricted unpickler that resolves only
an explicit allow-list of names to inert stand-ins (see :class:`_PolicyUnpickler`), decodes the
legacy tensor storages itself (numpy only; neither torch nor mjrl is imported), and writes one
``dapg_<task>_policy.npz`` of plain arrays per task plus a ``manifest.json`` that records the
source file and its sha256.

The policy, as mjrl's ``FCNetwork.forward`` computes it (``tanh`` between layers)::

    x = (obs - in_shift) / (in_scale + 1e-8)
    h = tanh(W0 x + b0); h = tanh(W1 h + b1); y = W2 h + b2
    action = y * out_scale + out_shift

:class:`DapgPolicy` evaluates the mean action (mjrl's ``evaluation`` action, no exploration
noise: ``log_std`` is kept in the file for reference only) in float64.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import struct
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: Tasks whose DAPG policy is imported (those :class:`mp1.envs.adroit.AdroitEnv` runs).
EXPERT_TASKS: tuple[str, ...] = ("door", "hammer", "pen")

#: sha256 of hand_dapg's ``dapg/policies/<task>-v0.pickle`` (commit 9a1de23); the manifest
#: records whether an imported file is that exact release.
RELEASE_SHA256: dict[str, str] = {
    "door": "288dd2131b905e40852d9eb032595bb9b3aa90b0502e9341e6b0e128b803478f",
    "hammer": "14c6b603af09acf87247f8b45d58f9671790d8e4ca0c48c8db5e1f7c98126ef4",
    "pen": "061dba4907a76b83139ae5a8d0809faa9774dd028d12ce869036b620bd728740",
}

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mp1-dapg-experts"
MANIFEST_VERSION = 1

# Refuse absurd inputs before reading them: the real files are 40-80 kB.
_MAX_PICKLE_BYTES = 64 * 2**20

# torch's legacy serialisation header (torch.serialization.MAGIC_NUMBER / PROTOCOL_VERSION).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# The normalisation vectors around the network, in the order of the formula.
_TRANSFORMS = ("in_shift", "in_scale", "out_shift", "out_scale")

# torch storage classes that may hold the weights, and the little-endian dtype of each.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
}


class ExpertFileError(ValueError):
    """A file that is not a readable DAPG policy (foreign, truncated, corrupt or unsafe)."""


def expert_cache_dir() -> Path:
    """Where imported experts live: ``$MP1_HOME/experts``, else ``~/.cache/mp1/experts``."""
    home = os.environ.get("MP1_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".cache" / "mp1"
    return root / "experts"


# The converted experts that ship with mp1 (Apache-2.0, NOTICE and LICENSE beside them).
PACKAGED_EXPERTS = Path(__file__).resolve().parent / "experts"


def default_expert_file(task: str) -> Path:
    """The expert used when none is named: one imported into :func:`expert_cache_dir` (the
    user re-derived or replaced it) wins over the packaged copy."""
    imported = expert_cache_dir() / expert_file_name(task)
    return imported if imported.is_file() else PACKAGED_EXPERTS / expert_file_name(task)


def expert_file_name(task: str) -> str:
    """The npz that :func:`import_experts` writes for ``task``."""
    return f"dapg_{task}_policy.npz"


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------


class _Record:
    """Inert stand-in for an allow-listed class: keeps the pickled attribute dict, runs nothing."""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ExpertFileError(f"unexpected pickled state for {type(self).__name__}")
        self.state = state


class _MLP(_Record):
    """mjrl.policies.gaussian_mlp.MLP"""


class _FCNetwork(_Record):
    """mjrl.utils.fc_network.FCNetwork"""


class _ModuleList(_Record):
    """torch.nn.ModuleList"""


class _Linear(_Record):
    """torch.nn.Linear"""


class _TorchFunctions:
    """Stand-in for ``torch._C._VariableFunctions``: mjrl pickles ``torch.tanh`` as
    ``getattr(torch._C._VariableFunctions, "tanh")``."""


class _TorchFunction:
    def __init__(self, name: str) -> None:
        self.name = name


_TORCH_FUNCTIONS = _TorchFunctions()
_ALLOWED_TORCH_FUNCTIONS = frozenset({"tanh", "relu", "sigmoid"})


def _getattr(obj: Any, name: Any) -> _TorchFunction:
    """``builtins.getattr`` restricted to naming an activation function of torch."""
    if obj is not _TORCH_FUNCTIONS or name not in _ALLOWED_TORCH_FUNCTIONS:
        raise ExpertFileError(f"disallowed getattr({type(obj).__name__}, {name!r}) in pickle")
    return _TorchFunction(name)


def _no_backend() -> None:
    """``torch.nn.backends.thnn._get_thnn_function_backend``: a module's long-gone backend."""
    return None


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject:
        raise ExpertFileError("object arrays are not allowed in a policy pickle")
    return dtype


# numpy's own pickle helpers, reached without naming private modules (numpy.core / _core).
_np_reconstruct = np.zeros(0).__reduce__()[0]
_np_scalar = np.float64(0).__reduce__()[0]


def _ndarray_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise ExpertFileError("only plain numpy arrays are allowed in a policy pickle")
    return _np_reconstruct(np.ndarray, shape, _check_dtype(np.dtype(dtype)))


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    return _check_dtype(np.dtype(spec, align, copy))


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    return _np_scalar(_check_dtype(np.dtype(dtype)), data)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` (the rest: requires_grad, hooks) as a bounds-checked
    numpy copy."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ExpertFileError("tensor without a decoded storage")
    try:
        offset, size, stride = int(offset), tuple(map(int, size)), tuple(map(int, stride))
    except (TypeError, ValueError):
        raise ExpertFileError("malformed tensor metadata") from None
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise ExpertFileError("malformed tensor metadata")
    if math.prod(size) > storage.size:  # a real weight never repeats storage elements
        raise ExpertFileError("tensor larger than its storage")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.size:
        raise ExpertFileError("tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in ``ALLOWED``; anything else is an :class:`ExpertFileError`."""

    ALLOWED: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise ExpertFileError(
                f"pickle refers to {module}.{name}, which a DAPG policy file does not contain; "
                "refusing to load it"
            ) from None


class _StorageUnpickler(_RestrictedUnpickler):
    """One torch legacy storage record: ``('storage', <type>, key, location, numel, view)``."""

    ALLOWED = {("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise ExpertFileError(f"unexpected persistent id in tensor storage: {pid!r}"[:200])
        _, kind, key, _location, numel, view = pid
        if not (isinstance(kind, _StorageType) and isinstance(numel, int)) or view is not None:
            raise ExpertFileError("unsupported tensor storage record")
        return (str(key), kind.dtype, numel)


def _load_legacy_storage(blob: Any) -> npt.NDArray[Any]:
    """``torch.storage._load_from_bytes``: torch's legacy (pre-1.6) single-storage stream, i.e.
    magic, protocol, system info, the storage record, the list of keys, then per key an int64
    element count and the raw little-endian data. Decoded here instead of by ``torch.load``."""
    if not isinstance(blob, bytes):
        raise ExpertFileError("tensor storage is not a byte string")
    f = io.BytesIO(blob)
    header = _StorageUnpickler(f)
    if header.load() != _LEGACY_MAGIC or header.load() != _LEGACY_PROTOCOL:
        raise ExpertFileError("tensor storage is not in torch's legacy format")
    sys_info = _StorageUnpickler(f).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise ExpertFileError("tensor storage is not little-endian")
    key, dtype, numel = _StorageUnpickler(f).load()
    if _StorageUnpickler(f).load() != [key]:
        raise ExpertFileError("tensor storage keys do not match")
    size_field = f.read(8)
    data = f.read()
    if len(size_field) != 8:
        raise ExpertFileError("tensor storage is truncated")
    (count,) = struct.unpack("<q", size_field)
    if count != numel or count < 0 or len(data) != count * dtype.itemsize:
        raise ExpertFileError("tensor storage is truncated or has the wrong size")
    return np.frombuffer(data, dtype=dtype).copy()


class _PolicyUnpickler(_RestrictedUnpickler):
    """The names an mjrl ``MLP`` pickle uses, each mapped to an inert stand-in or to a
    numpy-only re-implementation. No module is imported and no pickled callable runs."""

    ALLOWED = {
        ("mjrl.policies.gaussian_mlp", "MLP"): _MLP,
        ("mjrl.utils.fc_network", "FCNetwork"): _FCNetwork,
        ("torch.nn.modules.container", "ModuleList"): _ModuleList,
        ("torch.nn.modules.linear", "Linear"): _Linear,
        ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_legacy_storage,
        ("torch._C", "_VariableFunctions"): _TORCH_FUNCTIONS,
        ("builtins", "getattr"): _getattr,
        ("collections", "OrderedDict"): OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    }


# --------------------------------------------------------------------------------------------
# Reading one policy
# --------------------------------------------------------------------------------------------


def _array(value: Any, what: str, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype.kind != "f":
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise ExpertFileError(f"{what}: expected a float array of shape {shape}, got {got}")
    if not np.all(np.isfinite(value)):
        raise ExpertFileError(f"{what}: non-finite values")
    return value.astype(np.float64)


def _field(record: Any, cls: type[_Record], key: str) -> Any:
    if not isinstance(record, cls):
        raise ExpertFileError(f"expected an {cls.__doc__} object, got {type(record).__name__}")
    try:
        return record.state[key]
    except (AttributeError, KeyError):
        raise ExpertFileError(f"{cls.__doc__} object has no {key!r}") from None


def read_dapg_pickle(path: Path) -> dict[str, npt.NDArray[np.floating]]:
    """Arrays of one mjrl ``MLP`` policy pickle, in the npz layout (module docstring).

    Raises:
        ExpertFileError: not an mjrl MLP policy (wrong classes, wrong structure, truncated or
            corrupt data, or any name outside the allow-list); nothing in it is executed.
    """
    path = Path(path)
    if path.stat().st_size > _MAX_PICKLE_BYTES:
        raise ExpertFileError(f"{path}: too large for a DAPG policy ({path.stat().st_size} bytes)")
    try:
        policy = _PolicyUnpickler(io.BytesIO(path.read_bytes())).load()
        return _policy_arrays(policy)
    except ExpertFileError as error:
        raise ExpertFileError(f"{path}: {error}") from None
    except Exception as error:  # truncated or corrupt pickles fail in many ways
        reason = f"{type(error).__name__}: {error}"
        raise ExpertFileError(f"{path}: not a readable DAPG policy pickle ({reason})") from None


def _policy_arrays(policy: Any) -> dict[str, npt.NDArray[np.floating]]:
    net = _field(policy, _MLP, "model")
    obs_dim = int(_field(net, _FCNetwork, "obs_dim"))
    act_dim = int(_field(net, _FCNetwork, "act_dim"))
    nonlinearity = _field(net, _FCNetwork, "nonlinearity")
    if not (isinstance(nonlinearity, _TorchFunction) and nonlinearity.name == "tanh"):
        raise ExpertFileError("only tanh MLPs are supported (DAPG's policies)")
    fc_layers = _field(net, _FCNetwork, "_modules").get("fc_layers")
    layers = list(_field(fc_layers, _ModuleList, "_modules").values())
    if not layers:
        raise ExpertFileError("policy network has no layers")

    arrays: dict[str, npt.NDArray[np.floating]] = {}
    width = obs_dim
    for i, layer in enumerate(layers):
        params = _field(layer, _Linear, "_parameters")
        out = int(_field(layer, _Linear, "out_features"))
        arrays[f"W{i}"] = _array(params.get("weight"), f"layer {i} weight", (out, width))
        arrays[f"b{i}"] = _array(params.get("bias"), f"layer {i} bias", (out,))
        width = out
    if width != act_dim:
        raise ExpertFileError(f"network outputs {width} values, but act_dim is {act_dim}")
    # The float32 tensors the network computes with (mjrl casts its float64 `transformations`).
    for key in _TRANSFORMS:
        dim = obs_dim if key.startswith("in_") else act_dim
        arrays[key] = _array(_field(net, _FCNetwork, key), key, (dim,))
    log_std = _field(policy, _MLP, "log_std")
    arrays["log_std"] = _array(log_std, "log_std", (act_dim,)).astype(log_std.dtype)
    return arrays


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def _task_of(file: Path) -> str | None:
    """``door-v0.pickle``, ``door-v0_policy.pickle``, ``dapg_door_policy.pickle`` -> ``door``."""
    match = re.fullmatch(r"(?:dapg_)?([a-z]+)(?:-v0)?(?:_policy)?\.pickle", file.name)
    return match.group(1) if match and match.group(1) in EXPERT_TASKS else None


def find_policy_files(source: Path) -> dict[str, Path]:
    """The policy pickle of each task in a hand_dapg clone (``dapg/policies``) or a folder."""
    source = Path(source)
    folder = source / "dapg" / "policies" if (source / "dapg" / "policies").is_dir() else source
    if not folder.is_dir():
        raise FileNotFoundError(f"{source} is not a folder (expected a hand_dapg clone)")
    found: dict[str, Path] = {}
    for file in sorted(folder.glob("*.pickle")):
        task = _task_of(file)
        if task is None:
            continue
        if task in found:
            names = f"{found[task].name}, {file.name}"
            raise ExpertFileError(f"two policies for {task!r} in {folder}: {names}")
        found[task] = file
    if not found:
        raise FileNotFoundError(
            f"no DAPG policy pickles in {folder}; expected a clone of "
            "https://github.com/aravindr93/hand_dapg (dapg/policies/<task>-v0.pickle) or a folder "
            f"of <task>-v0.pickle files, task in {EXPERT_TASKS}"
        )
    return found


def _atomic_write(dest: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a
    half-written file."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_experts(source: Path, dest: Path | None = None) -> dict[str, Path]:
    """Convert the DAPG policy pickles under ``source`` into ``<dest>/dapg_<task>_policy.npz``.

    Args:
        source: a clone of aravindr93/hand_dapg, or a folder of ``<task>-v0.pickle`` /
            ``<task>-v0_policy.pickle`` files.
        dest: output folder; default :func:`expert_cache_dir`.

    Returns:
        ``{task: npz path}`` for every task found. ``<dest>/manifest.json`` gains (or updates)
        one entry per task: output file, source path, source sha256, and whether that sha256 is
        hand_dapg's published file.

    Raises:
        FileNotFoundError: no policy pickles under ``source``.
        ExpertFileError: a file is not a readable DAPG policy. Nothing is written for any task
            unless every file converts.
    """
    dest = expert_cache_dir() if dest is None else Path(dest)
    converted = {}
    for task, file in find_policy_files(Path(source)).items():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        converted[task] = (file, digest, read_dapg_pickle(file))

    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST_NAME
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "experts": {}}
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text())
            if previous.get("format") == MANIFEST_FORMAT:
                manifest["experts"].update(previous.get("experts", {}))
        except (ValueError, AttributeError, TypeError):
            pass  # a damaged manifest is rewritten from what is imported now
    written: dict[str, Path] = {}
    for task, (file, digest, arrays) in converted.items():
        out = dest / expert_file_name(task)
        _atomic_write(out, lambda f, arrays=arrays: np.savez(f, **arrays))
        manifest["experts"][task] = {
            "file": out.name,
            "source": str(file.resolve()),
            "source_sha256": digest,
            "hand_dapg_release": digest == RELEASE_SHA256.get(task),
            "obs_dim": int(arrays["W0"].shape[1]),
            "act_dim": int(arrays["out_shift"].shape[0]),
        }
        written[task] = out
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _atomic_write(manifest_path, lambda f: f.write(text.encode()))
    return written


# --------------------------------------------------------------------------------------------
# Running one policy
# --------------------------------------------------------------------------------------------


class DapgPolicy:
    """The mean action of a DAPG MLP policy (module docstring), from an imported npz."""

    def __init__(self, arrays: dict[str, npt.NDArray[np.floating]]) -> None:
        count = sum(1 for key in arrays if re.fullmatch(r"W\d+", key))
        try:
            self.in_shift, self.in_scale, self.out_shift, self.out_scale = (
                np.asarray(arrays[key], np.float64) for key in _TRANSFORMS
            )
            self.layers = [
                (np.asarray(arrays[f"W{i}"], np.float64), np.asarray(arrays[f"b{i}"], np.float64))
                for i in range(count)
            ]
        except KeyError as missing:
            raise ExpertFileError(f"expert arrays lack {missing}") from None
        if not self.layers or self.layers[0][0].ndim != 2:
            raise ExpertFileError("expert arrays hold no layers (W0, b0, ...)")
        self.obs_dim = self.layers[0][0].shape[1]
        self.act_dim = self.layers[-1][0].shape[0]
        width = self.obs_dim
        for weight, bias in self.layers:
            if bias.ndim != 1 or weight.shape != (bias.size, width):
                raise ExpertFileError("expert layer shapes do not chain")
            width = weight.shape[0]
        if {self.in_shift.shape, self.in_scale.shape} != {(self.obs_dim,)} or {
            self.out_shift.shape, self.out_scale.shape
        } != {(self.act_dim,)}:
            raise ExpertFileError("expert normalisation vectors have the wrong size")

    @classmethod
    def load(cls, path: Path) -> DapgPolicy:
        """Read an npz written by :func:`import_experts` (plain arrays, no pickle allowed)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise
        except Exception as error:  # anything but an npz of plain arrays
            raise ExpertFileError(f"{path}: not a readable expert file ({error})") from None
        return cls(arrays)

    def __call__(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Mean action for one raw observation (not clipped)."""
        h = (np.asarray(obs, dtype=np.float64) - self.in_shift) / (self.in_scale + 1e-8)
        for i, (weight, bias) in enumerate(self.layers):
            h = weight @ h + bias
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        return h * self.out_scale + self.out_shift
