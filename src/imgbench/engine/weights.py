"""Checkpoints: where a model's starting weights come from, how they are loaded, and how a job keeps its own.

A job starts from random weights, from its model's pretrained weights (``pretrained=true``), or from a file
(``weights=PATH``): a torch state_dict (``.pt``/``.pth``), ``.safetensors``, or a Keras ``.weights.h5``.
``save_weights=true`` writes ``model.safetensors`` whose metadata carries the preprocessing the model was
trained with, so a job that loads it feeds the model exactly what it saw.

Checking a file (``check_weights_file``, ``file_sha256``, ``checkpoint_metadata``) imports no framework: the
runner can refuse a bad file before any kernel starts. Loading and saving import torch when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from imgbench.errors import UsageError
from imgbench.paths import atomic_write_bytes
from imgbench.specs import DataConfig, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from imgbench.wrappers import KerasModule

METADATA_KEY = "imgbench"  # the safetensors metadata entry holding the JSON below
CHECKPOINT_VERSION = 1
FORMATS = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".weights.h5": "keras"}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SHOWN_KEYS = 5  # mismatching keys named in an error
_HASH_CHUNK = 1 << 20
_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_format(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise UsageError(f"weights={os.fspath(path)!r}: unknown checkpoint format; use a torch state_dict "
                     f"(.pt, .pth), .safetensors, or a Keras .weights.h5 file")


def resolve_weights_path(value: str) -> str:
    """The absolute path of a ``weights=`` value (jobs run in their own folders), checked."""
    path = Path(value).expanduser().resolve()
    check_weights_file(path)
    return str(path)


def check_weights_file(path: str | os.PathLike) -> str:
    """The file's format, after checking it exists, is readable and is whole; raises ``UsageError``.

    Cheap and framework-free (a header read), so a grid can call it before any job starts.
    """
    path = Path(path)
    kind = weights_format(path)
    if not path.is_file():
        raise UsageError(f"weights={os.fspath(path)!r}: no such file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if kind == "safetensors":
                _check_safetensors(handle, head, size)
    except OSError as exc:
        raise UsageError(f"weights={os.fspath(path)!r}: cannot read it ({exc})") from exc
    except ValueError as exc:
        raise UsageError(f"weights={os.fspath(path)!r} is not a whole safetensors file ({exc}); "
                         f"copy it again or save it with safetensors.torch.save_file") from exc
    if kind == "torch" and not zipfile.is_zipfile(path):
        raise UsageError(f"weights={os.fspath(path)!r} is not a torch.save checkpoint (no zip archive: "
                         f"truncated, or another format); save a state_dict with torch.save(model.state_dict(), path)")
    if kind == "keras":
        if head != HDF5_SIGNATURE:
            raise UsageError(f"weights={os.fspath(path)!r} is not an HDF5 file; save Keras weights with "
                             f"model.save_weights('name.weights.h5')")
        import h5py

        try:
            with h5py.File(path, "r"):
                pass
        except OSError as exc:
            raise UsageError(f"weights={os.fspath(path)!r}: the HDF5 file is damaged or truncated ({exc})") from exc
    return kind


def _check_safetensors(handle, head: bytes, size: int) -> None:
    if len(head) < 8:
        raise ValueError("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", head)
    if length > size - 8:
        raise ValueError(f"header of {length} bytes in a {size}-byte file")
    header = json.loads(handle.read(length))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if 8 + length + max(ends, default=0) != size:
        raise ValueError(f"its tensors need {8 + length + max(ends, default=0)} bytes, the file has {size}")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a grid hashes a shared checkpoint once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """What ``save_weights`` recorded in a safetensors file (model, classes, preprocessing), if anything."""
    path = Path(path)
    if weights_format(path) != "safetensors":
        return None
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        meta = json.loads(handle.read(length)).get("__metadata__") or {}
    return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None


# -- where a job starts from ------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """A job's starting point: the preprocessing its weights expect (None = the dataset's) and the file."""

    data_config: DataConfig | None
    path: str = ""
    sha256: str = ""
    format: str = ""
    metadata: Mapping[str, Any] | None = None  # an imgbench checkpoint's record

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "format": self.format,
                "imgbench_checkpoint": self.metadata is not None}


def plan_start(spec: ModelSpec, pretrained: bool, weights: str) -> Start:
    """Which preprocessing a job uses: an imgbench checkpoint's own, else the model's pretrained data config
    for pretrained or foreign weights, else none (the shared dataset normalisation)."""
    if not weights:
        return Start(_pretrained_config(spec) if pretrained else None)
    kind = check_weights_file(weights)
    metadata = checkpoint_metadata(weights)
    if metadata is not None:
        saved = DataConfig.from_dict(metadata["preprocessing"])
        config: DataConfig | None = replace(saved, source=f"imgbench checkpoint ({saved.source})")
    else:
        config = _pretrained_config(spec)
    return Start(config, weights, file_sha256(weights), kind, metadata)


def _pretrained_config(spec: ModelSpec) -> DataConfig | None:
    return spec.data_config() if spec.data_config is not None else None


# -- loading and saving (torch from here on) -----------------------------------------------------------
def core_module(net: torch.nn.Module) -> torch.nn.Module:
    """The built model inside the registry's and the engine's wrappers: what a checkpoint holds."""
    from imgbench.wrappers import FrozenBackbone, ResizeInput

    while isinstance(net, (ResizeInput, FrozenBackbone)):
        net = net.model
    return net


def default_classifier(net: torch.nn.Module) -> torch.nn.Module:
    """The last submodule that holds parameters of its own (a plain model's final linear layer)."""
    owners = [m for m in net.modules() if next(m.parameters(recurse=False), None) is not None]
    if not owners:
        raise UsageError(f"{type(net).__name__} has no parameters, so it has no classification head")
    return owners[-1]


def model_state(core: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Name -> live tensor for everything a checkpoint holds (Keras: every variable, by a stable name)."""
    from imgbench.wrappers import KerasModule

    if isinstance(core, KerasModule):
        return {name: variable.value for name, variable in keras_variables(core).items()}
    return dict(core.state_dict(keep_vars=True))


def keras_variables(core: KerasModule) -> dict[str, Any]:
    """Every weight of a wrapped Keras model, named ``<n>.<layer class>.<variable>`` with ``n`` the layer's
    place among the layers that hold weights. Keras' own names carry global counters (``dense_3``) that change
    with every model built in a process; places do not."""
    named: dict[str, Any] = {}
    for place, layer in enumerate(core.weighted_layers()):
        for variable in layer.weights:
            name = f"{place}.{type(layer).__name__}.{variable.name}"
            named[name if name not in named else f"{name}.{len(named)}"] = variable
    return named


def head_keys(core: torch.nn.Module, head: torch.nn.Module) -> set[str]:
    ids = {id(p) for p in head.parameters()} | {id(b) for b in head.buffers()}
    return {name for name, tensor in model_state(core).items() if id(tensor) in ids}


def load_weights(core: torch.nn.Module, path: str, head: torch.nn.Module, model: str) -> dict[str, Any]:
    """Load a checkpoint into ``core``; a head of another shape keeps its fresh initialisation.

    Returns which keys were loaded and which are new; raises ``UsageError`` naming the first keys that do
    not fit when anything but the head differs.
    """
    import torch

    kind = weights_format(path)
    target = model_state(core)
    heads = head_keys(core, head)
    if kind == "keras":
        return _load_keras_file(core, path, heads, model)
    source = _read_state(path, kind)
    fits = [k for k in target if k in source and tuple(source[k].shape) == tuple(target[k].shape)]
    new = [k for k in target if k not in fits]
    problems = [_describe(k, source, target) for k in new if k not in heads][:SHOWN_KEYS]
    problems += [f"{k} (in the file, not in the model)" for k in source if k not in target][:SHOWN_KEYS]
    if problems or not fits:
        _raise_misfit(path, model, problems or ["no tensor of the file is in the model"], len(target))
    with torch.no_grad():
        for key in fits:
            target[key].copy_(source[key])
    return {"loaded_keys": fits, "new_keys": new}


def _describe(key: str, source: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    if key not in source:
        return f"{key} (missing from the file)"
    return f"{key} (file {tuple(source[key].shape)}, model {tuple(target[key].shape)})"


def _raise_misfit(path: str, model: str, problems: list[str], total: int) -> None:
    raise UsageError(f"weights={path!r} do not fit {model} ({total} tensors); the first that differ: "
                     f"{'; '.join(problems)}. Use a checkpoint of this architecture (only the "
                     f"classification head may differ)")


def _read_state(path: str, kind: str) -> dict[str, Any]:
    import torch

    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file surfaces in the reader's own words
        raise UsageError(f"weights={path!r} cannot be read as {kind}: {type(exc).__name__}: {exc}") from exc
    for wrapper in ("state_dict", "model_state_dict", "model"):  # common training-script layouts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"weights={path!r} holds no state_dict (a dict of tensors); save one with "
                         f"torch.save(model.state_dict(), path)")
    return state


def _load_keras_file(core: torch.nn.Module, path: str, heads: set[str], model: str) -> dict[str, Any]:
    """Keras' own loader, with every float variable set to NaN first: what is still NaN was not in the file
    (Keras' loader only warns about what it skipped)."""
    import torch

    from imgbench.wrappers import KerasModule

    if not isinstance(core, KerasModule):
        raise UsageError(f"weights={path!r} is a Keras file; {model} is not a Keras model")
    variables = {k: v for k, v in keras_variables(core).items() if v.value.is_floating_point()}
    fresh = {k: v.value.detach().clone() for k, v in variables.items()}
    for variable in variables.values():
        variable.assign(torch.full_like(variable.value, float("nan")))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            core.net.load_weights(path, skip_mismatch=True)
    except Exception as exc:
        raise UsageError(f"weights={path!r} cannot be read as Keras weights: {type(exc).__name__}: {exc}") from exc
    new = [k for k, v in variables.items() if bool(torch.isnan(v.value).all())]
    for key in new:
        variables[key].assign(fresh[key])
    problems = [f"{k} (missing from the file or of another shape)" for k in new if k not in heads][:SHOWN_KEYS]
    if problems or len(new) == len(variables):
        _raise_misfit(path, model, problems or ["no variable of the file is in the model"], len(variables))
    return {"loaded_keys": [k for k in variables if k not in new], "new_keys": new}


def save_checkpoint(core: torch.nn.Module, path: Path, metadata: Mapping[str, Any]) -> None:
    """``core``'s weights as safetensors with imgbench's metadata, written atomically."""
    from safetensors.torch import save


    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model_state(core).items()}
    record = {"version": CHECKPOINT_VERSION, **metadata}
    atomic_write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(record)}))
