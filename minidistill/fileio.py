"""Files on disk, safely: atomic writes, JSON, and HF-format weights and configs.

The bottom layer of the package (it imports nothing from minidistill), so every layer above
(data caches, the Trainer's checkpoints, models, the report, the course) writes files the same way.

* Reading never executes code: ``model.safetensors`` (and sharded ``*.safetensors`` with an
  index) is read with safetensors; a legacy ``pytorch_model.bin`` only through
  ``torch.load(weights_only=True)``, which refuses pickled code.
* Writing is atomic: each file is written to a temporary name in the same folder and then
  renamed over the target, so a crash mid-save never leaves a half-written file and never
  loses the previous one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, unreadable or incompatible."""


@contextmanager
def atomic_path(target: "str | os.PathLike"):
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left as it was. The file
    gets the permissions a plain ``open`` would give it (``0o666`` less the umask), not the
    ``0o600`` of a temporary file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_config(folder) -> dict:
    """The parsed ``config.json`` of a checkpoint folder."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def save_weights(path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write ``tensors`` (name → NumPy array) as safetensors, atomically.

    The metadata carries ``format: pt`` so that transformers accepts the file.
    """
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"format": "pt", **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)


#: safetensors metadata key listing names stored once for several (``{alias: stored name}``)
SHARED_KEY = "minidistill.shared"


def unique_tensors(named_parameters) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, aliases)`` from ``(name, parameter)`` pairs: each parameter object once,
    under its first name, and ``{later name: first name}`` for the others."""
    tensors, first, aliases = {}, {}, {}
    for name, p in named_parameters:
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
            tensors[name] = p.numpy()
    return tensors, aliases


def alias_metadata(aliases: dict[str, str]) -> dict:
    """Safetensors metadata recording shared names (empty when nothing is shared)."""
    return {SHARED_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {}


def load_weights(folder) -> dict[str, np.ndarray]:
    """Read every weight of a checkpoint folder as NumPy arrays (no code is executed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if (folder / SAFE_WEIGHTS).is_file():
        return _read_safetensors(folder / SAFE_WEIGHTS)
    if (folder / SAFE_INDEX).is_file():
        index = json.loads((folder / SAFE_INDEX).read_text())
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            out.update(_read_safetensors(folder / shard))
        return out
    if (folder / TORCH_WEIGHTS).is_file():
        return _read_torch_bin(folder / TORCH_WEIGHTS)
    raise CheckpointError(
        f"no weights in {folder}: expected {SAFE_WEIGHTS}, {SAFE_INDEX} or {TORCH_WEIGHTS}"
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        out = {}
        with safe_open(str(path), framework="numpy") as fh:
            for key in fh.keys():
                out[key] = fh.get_tensor(key)
            meta = fh.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"could not read {path}: the file is corrupt or not safetensors ({e})") from None
    return _expand_aliases(out, meta.get(SHARED_KEY), path)


def _expand_aliases(tensors: dict, shared: str | None, path: Path) -> dict:
    """Point every recorded alias at its stored tensor (the same array)."""
    if not shared:
        return tensors
    try:
        aliases = json.loads(shared)
        if not isinstance(aliases, dict):
            raise ValueError("not a mapping")
    except ValueError as e:
        raise CheckpointError(f"{path}: the shared-weights metadata is not a JSON mapping ({e})") from None
    for alias, name in aliases.items():
        if name not in tensors:
            raise CheckpointError(f"{path}: shared name {alias!r} points at {name!r}, which the file lacks")
        tensors[alias] = tensors[name]
    return tensors


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install 'minidistill[torch]'), "
            "or convert the checkpoint to model.safetensors"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"could not read {path} safely (weights_only=True): {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
