"""The jam-flow checkpoint / export format (docs/CONVENTIONS.md "Checkpoints and exported models"): its version,
its fields and their order, safe reading, the strict state-dict check, building the network from ``class_path`` and
writing an export directory. No tensor dimensions of its own (state dicts only). The one owner of the format:
training (``jam_flow.lightning``) writes ``ckpt["jam_flow"]`` with :func:`make_meta`, inference and export read it
with :func:`read_model_file`.

* every ``.ckpt`` / ``.pt`` read goes through :func:`read_torch_file`: ``torch.load(weights_only=True)`` (tensors and
  plain values only); a file that needs more (a pickled ``__reduce__``) is refused with one line before it runs;
* an export directory is ``model.safetensors`` + ``config.yaml`` (:data:`META_FIELDS` plus ``weights_sha256``, the
  SHA-256 of ``model.safetensors``, checked on load; exports written before it load without the check);
* ``model.class_path`` is a string read from the file: it must be one of :data:`NETWORK_CLASSES` (jam-flow's own
  networks), compared as a string before anything is imported or built, so a file can never name another class
  (``subprocess.Popen``, ...). :func:`check_meta` does it for every reader, :func:`check_class_path` for the
  hyper-parameters Lightning reads from ``--ckpt_path``.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.models.audio_dit import AudioDiT
from jam_flow.models.joint_dit import JointDiT
from jam_flow.models.motion_dit import MotionDiT

__all__ = [
    "FORMAT_VERSION",
    "META_FIELDS",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "CHECKSUM_FIELD",
    "CONVERT_HINT",
    "ModelFile",
    "read_torch_file",
    "read_model_file",
    "check_model_file",
    "write_export",
    "make_meta",
    "check_meta",
    "NETWORK_CLASSES",
    "check_class_path",
    "check_hyper_parameters",
    "model_class",
    "build_model",
    "build_checked_model",
    "net_spec",
    "text_num_embeds",
    "text_embeds_holder",
    "state_dict_problems",
    "check_state_dict",
    "sha256_file",
    "check_weight_dtypes",
    "plain",
]

FORMAT_VERSION = 1
# the fields of ckpt["jam_flow"] (plus "ema_state_dict") and of an export's config.yaml, in writing order
META_FIELDS = ("format_version", "model", "mel", "motion", "stats", "vocab", "text_units", "normalize_mel")
# fields added after format version 1 was first written, with the value a file without them means
OPTIONAL_FIELDS = {"text_units": "char"}
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.yaml"
CHECKSUM_FIELD = "weights_sha256"  # export config.yaml only


# every class_path a checkpoint / export may name: the public name and the defining module's (older files)
NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    **{f"jam_flow.models.{c.__name__}": c for c in (JointDiT, AudioDiT, MotionDiT)},
    "jam_flow.models.joint_dit.JointDiT": JointDiT,
    "jam_flow.models.audio_dit.AudioDiT": AudioDiT,
    "jam_flow.models.motion_dit.MotionDiT": MotionDiT,
}

CONVERT_HINT = "if you trust the file, convert it once as docs/training.md 'Checkpoint safety' shows"


def _refusal(err: Exception) -> str:
    """The one-line reason of a ``weights_only`` refusal (torch's own message spans several lines)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    if found:
        return f"unpickling it would call {found.group(1)}"
    found = re.search(r"Unsupported operand \d+", text)
    if found:
        return f"it is not a tensor/plain-value pickle ({found.group(0).lower()})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def read_torch_file(path: str | Path, what: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure is one ``InputError`` line naming ``what``
    (the argument) and the file: missing, not a file, truncated / corrupt, or needing code to unpickle.
    ``mmap`` maps the tensors of a zip checkpoint instead of reading them (a cheap check of a large file)."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what}: {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")  # refused below when it matters
            lazy = {"mmap": True} if mmap and zipfile.is_zipfile(path) else {}
            return torch.load(str(path), map_location="cpu", weights_only=True, **lazy)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{what}: {path} refused: {_refusal(err)}; jam-flow only loads tensors and plain values "
            f"(torch.load weights_only=True); {CONVERT_HINT}"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic number, ... : not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"{what}: {path} is not a readable PyTorch checkpoint (truncated or corrupt? {type(err).__name__}: "
            f"{first})"
        ) from err


def plain(obj: Any) -> Any:
    """Dataclasses -> dicts, enums -> their values, tuples -> lists, numpy/tensor values -> Python numbers, recursively:
    what ``weights_only=True`` and YAML both read back (checkpoint hyper-parameters, export ``config.yaml``)."""
    import dataclasses
    import enum

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------------------------------------------ fields
def make_meta(
    model: dict[str, Any],
    mel: Any,
    motion: Any,
    stats: Any,
    vocab: Any,
    normalize_mel: bool,
    text_units: str = "char",
) -> dict[str, Any]:
    """``ckpt["jam_flow"]`` without the weights, in :data:`META_FIELDS` order (the one writer of the field list)."""
    values = {
        "model": model,
        "mel": mel,
        "motion": motion,
        "stats": stats,
        "vocab": vocab,
        "text_units": text_units,
    }
    meta = {"format_version": FORMAT_VERSION, **values, "normalize_mel": bool(normalize_mel)}
    return {k: meta[k] for k in META_FIELDS}


def check_meta(meta: Any, where: str) -> dict[str, Any]:
    """``meta`` if it is a mapping holding every :data:`META_FIELDS` entry at a known ``format_version``; a missing
    :data:`OPTIONAL_FIELDS` entry is filled in (in place) with the value older files mean."""
    if not isinstance(meta, dict):
        raise InputError(f"{where}: expected a mapping of jam-flow metadata, got {type(meta).__name__}")
    for field, value in OPTIONAL_FIELDS.items():
        meta.setdefault(field, value)
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise InputError(f"{where}: missing fields {missing} (expected {list(META_FIELDS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"{where}: unknown format_version {meta['format_version']!r} (this jam-flow reads {FORMAT_VERSION})"
        )
    if not isinstance(meta["model"], dict) or "class_path" not in meta["model"]:
        raise InputError(f"{where}: field 'model' must hold 'class_path' and 'init_args'")
    check_class_path(meta["model"]["class_path"], where, "model.class_path")
    return meta


# ------------------------------------------------------------------------------------------------------ networks
def check_class_path(class_path: Any, where: str, field: str = "model.class_path") -> str:
    """``class_path`` if it is one of :data:`NETWORK_CLASSES` (a plain string comparison: nothing is imported),
    else an ``InputError`` naming ``where`` and ``field``."""
    if not isinstance(class_path, str) or class_path not in NETWORK_CLASSES:
        allowed = ", ".join(f"jam_flow.models.{c.__name__}" for c in (JointDiT, AudioDiT, MotionDiT))
        raise InputError(
            f"{where}: {field} is {class_path!r}, not one of jam-flow's networks ({allowed}); refusing to import "
            "or build a class named by a file"
        )
    return class_path


def check_hyper_parameters(hparams: Any, where: str, field: str = "hyper_parameters") -> None:
    """Every ``class_path`` in a Lightning checkpoint's ``hyper_parameters`` (LightningCLI builds the network from
    ``net.class_path`` when it resumes from ``--ckpt_path``) is one of :data:`NETWORK_CLASSES`; jam-flow never
    writes ``_class_path`` (a whole LightningModule named by the file), so it is refused too. Nothing is imported."""
    if isinstance(hparams, Mapping):
        for key, value in hparams.items():
            name = f"{field}.{key}"
            if key == "_class_path":
                raise InputError(
                    f"{where}: {name} is {value!r}; jam-flow checkpoints never name their LightningModule class, "
                    "refusing to import or build a class named by a file"
                )
            if key == "class_path":
                check_class_path(value, where, name)
            check_hyper_parameters(value, where, name)
    elif isinstance(hparams, (list, tuple)):
        for i, value in enumerate(hparams):
            check_hyper_parameters(value, where, f"{field}[{i}]")


def model_class(class_path: str, where: str) -> type[nn.Module]:
    """The network class ``class_path`` names: an entry of :data:`NETWORK_CLASSES` (checked, never imported)."""
    return NETWORK_CLASSES[check_class_path(class_path, where)]


def build_model(spec: Mapping[str, Any], where: str) -> nn.Module:
    """Instantiate ``spec`` (``{"class_path", "init_args"}``). The network keeps its constructor arguments as
    ``net.init_args`` (written back into checkpoints by :func:`net_spec`)."""
    cls = model_class(spec["class_path"], where)
    init_args = dict(spec.get("init_args") or {})
    try:
        net = cls(**init_args)
    except TypeError as err:
        raise InputError(f"{where}: model.init_args do not fit {cls.__name__} ({err})") from err
    if not isinstance(getattr(net, "init_args", None), dict):
        net.init_args = init_args
    return net


def _size_problems(init_args: Any, limit: int, prefix: str) -> list[str]:
    from jam_flow.models.configs import SIZE_INIT_ARGS

    problems = []
    for key, value in (init_args or {}).items() if isinstance(init_args, Mapping) else ():
        if isinstance(value, Mapping):
            problems += _size_problems(value, limit, f"{prefix}{key}.")
        elif key in SIZE_INIT_ARGS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                problems.append(f"{prefix}{key}={value!r}")
    return problems


def build_checked_model(spec: Mapping[str, Any], state: Mapping[str, Tensor], where: str) -> nn.Module:
    """:func:`build_model` for saved weights ``state``, sized from the weights before anything is allocated: every
    size argument (``models.configs.SIZE_INIT_ARGS``) must be an integer no larger than the number of values the
    weights hold, and the network is first built on the meta device and checked key for key and shape for shape
    (:func:`check_state_dict`). Only then is it built for real (not yet loaded)."""
    limit = sum(int(t.numel()) for t in state.values() if isinstance(t, Tensor))
    problems = _size_problems(spec.get("init_args"), limit, "model.init_args.")
    if problems:
        raise InputError(
            f"{where}: {', '.join(problems[:5])} do not fit the weights (sizes must be integers of at most "
            f"{limit}, the number of values they hold)"
        )
    with torch.device("meta"):
        probe = build_model(spec, where)
    check_state_dict(probe, state, where)
    del probe
    return build_model(spec, where)


def net_spec(net: nn.Module, hint: Mapping[str, Any] | None = None, strict: bool = True) -> dict | None:
    """``{"class_path", "init_args"}`` that rebuilds ``net``: the CLI's config when given (``hint``), else the
    network's own record of its constructor arguments (``net.init_args``)."""
    import sys

    cls = type(net)
    models = sys.modules.get("jam_flow.models")  # loaded with any of its classes (no import edge back up)
    public = f"jam_flow.models.{cls.__name__}" if getattr(models, cls.__name__, None) is cls else None
    class_path = public or f"{cls.__module__}.{cls.__qualname__}"
    own = getattr(net, "init_args", None)
    if hint is not None and str(hint["class_path"]).rsplit(".", 1)[-1] == cls.__name__:
        init_args = dict(hint.get("init_args") or {})
        if isinstance(own, dict):  # always record the keys old ckpts lack (LEGACY_INIT_ARGS)
            for key in ("motion_window_layers", "motion_window_with_alpha"):
                if key in own:
                    init_args.setdefault(key, own[key])
        return {"class_path": class_path, "init_args": init_args}
    if isinstance(own, dict):
        return {"class_path": class_path, "init_args": dict(own)}
    if strict:
        raise InputError(
            f"cannot record how to rebuild {cls.__name__}: build it through the CLI config "
            "(model.net.class_path/init_args) or give it an 'init_args' dict"
        )
    return None


def text_embeds_holder(init_args: Any) -> Any:
    """The mapping of a network's ``init_args`` that holds ``text_num_embeds``: ``init_args["audio"]`` for a
    JointDiT, ``init_args`` itself for an AudioDiT; None when there is none (a MotionDiT)."""
    if init_args is None:
        return None
    holder = init_args.get("audio") if init_args.get("audio") is not None else init_args
    return holder if "text_num_embeds" in holder else None


def text_num_embeds(init_args: Any) -> int | None:
    """The text vocabulary size a network's ``init_args`` state (None when they state none)."""
    try:
        holder = text_embeds_holder(init_args)
        return None if holder is None else int(holder["text_num_embeds"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------------ weights
def _diff(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> tuple[list, list, list]:
    """``(missing keys, unexpected keys, keys of another shape)`` of ``state`` against ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, wrong


def state_dict_problems(expected: Mapping[str, Tensor], state: Mapping[str, Tensor], name=str) -> list[str]:
    """Every difference between two state dicts, one line each: missing / unexpected keys and shape mismatches
    (keys shown through ``name``)."""
    missing, unexpected, wrong = _diff(expected, state)
    return (
        [f"missing key {name(k)!r}" for k in missing]
        + [f"unexpected key {name(k)!r}" for k in unexpected]
        + [
            f"shape mismatch for {name(k)!r}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
            for k in wrong
        ]
    )


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """Raise ``InputError`` (naming ``where``) unless ``state`` matches ``model.state_dict()`` key for key and
    shape for shape (the first five of each kind are listed, with the count)."""
    expected = model.state_dict()
    missing, unexpected, wrong = _diff(expected, state)
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise InputError(f"{where}: weights do not match the model config ({'; '.join(problems)})")


WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_weight_dtypes(state: Mapping[str, Any], where: str) -> None:
    """``InputError`` naming ``where`` and the first offending key unless every weight is a float32 / float16 /
    bfloat16 tensor (an int8, bool or float64 weight is refused, never converted)."""
    bad = [(k, v) for k, v in state.items() if not isinstance(v, Tensor) or v.dtype not in WEIGHT_DTYPES]
    if bad:
        key, value = bad[0]
        kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise InputError(
            f"{where}: weight {key!r} is {kind} ({len(bad)} such entries); expected float32, float16 or bfloat16 "
            "tensors"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------ files
@dataclass
class ModelFile:
    """What a ``.ckpt`` or an export directory holds: ``meta`` (the fields, checked), the EMA ``state`` dict, the
    ``source`` path and ``where`` (the file to name in later errors)."""

    meta: dict[str, Any]
    state: dict[str, Tensor]
    source: Path
    where: str


def _export_meta(path: Path, what: str) -> tuple[dict[str, Any], Path, Path]:
    """``(meta, config path, weights path)`` of an export directory; the fields (and class path) are checked."""
    import yaml

    cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise InputError(f"{what}: export directory {path} has no {p.name}")
    try:
        meta = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{cfg_path}: not valid YAML text ({first})") from err
    return check_meta(meta, str(cfg_path)), cfg_path, weights_path


def _ckpt_meta(path: Path, what: str, mmap: bool = False) -> tuple[dict[str, Any], str]:
    """``(ckpt["jam_flow"], where)`` of a Lightning ``.ckpt``; the fields (and class path) are checked."""
    if not path.is_file():
        raise InputError(f"{what}: {path} does not exist (expected a .ckpt file or an export directory)")
    ckpt = read_torch_file(path, what, mmap=mmap)
    if not isinstance(ckpt, dict) or "jam_flow" not in ckpt:
        raise InputError(
            f"{path}: not a jam-flow checkpoint (no 'jam_flow' entry; was it written by `jam-flow fit`?)"
        )
    meta = ckpt["jam_flow"]
    if not isinstance(meta, dict) or "ema_state_dict" not in meta:
        raise InputError(f"{path}: ckpt['jam_flow'] has no 'ema_state_dict'")
    where = f"{path} [jam_flow]"
    return check_meta(meta, where), where


def check_model_file(path: str | Path, what: str) -> None:
    """The cheap part of :func:`read_model_file` (fields and class path; the weights are memory-mapped or not read
    at all): a command that loads several models later checks them all first."""
    path = Path(path)
    if path.is_dir():
        _export_meta(path, what)
    else:
        _ckpt_meta(path, what, mmap=True)


def read_model_file(path: str | Path, what: str) -> ModelFile:
    """Read a jam-flow model: a Lightning ``.ckpt`` (its ``ckpt["jam_flow"]`` block, EMA weights) or an export
    directory (its checksum verified when it has one). ``what`` names the argument in errors. The fields, and
    ``model.class_path`` against :data:`NETWORK_CLASSES`, are checked (:func:`check_meta`)."""
    path = Path(path)
    if path.is_dir():
        meta, cfg_path, weights_path = _export_meta(path, what)
        want = meta.get(CHECKSUM_FIELD)
        if want is not None and sha256_file(weights_path) != str(want):
            raise InputError(
                f"{weights_path}: its SHA-256 does not match {CHECKSUM_FIELD} in {cfg_path} (the weights file is "
                "corrupt or was changed; export the checkpoint again)"
            )
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as err:
            raise InputError(f"{weights_path}: cannot read safetensors ({err})") from err
        check_weight_dtypes(state, str(weights_path))
        return ModelFile(meta, state, path, str(cfg_path))
    meta, where = _ckpt_meta(path, what)
    if not isinstance(meta["ema_state_dict"], dict):
        raise InputError(f"{where}: 'ema_state_dict' must be a mapping of tensors")
    check_weight_dtypes(meta["ema_state_dict"], f"{where} ema_state_dict")
    return ModelFile(meta, meta["ema_state_dict"], path, where)


def write_export(out_dir: str | Path, state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` (``state``, meant to be the EMA weights) and ``out_dir/config.yaml``
    (:data:`META_FIELDS` of ``meta`` and the weights' SHA-256). Returns ``out_dir``."""
    import yaml
    from safetensors.torch import save_file

    meta = check_meta(dict(meta), "write_export: meta")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (tied weights)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    weights = out_dir / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"format": "jam-flow", "format_version": str(FORMAT_VERSION)})
    config = {k: plain(meta[k]) for k in META_FIELDS}
    config[CHECKSUM_FIELD] = sha256_file(weights)
    (out_dir / CONFIG_FILE).write_text(
        yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return out_dir
