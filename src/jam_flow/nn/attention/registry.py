"""Which implementation runs a backend on a device: the one table from (backend, device) to code.

Dimension legend: b batch, h heads, d head dim, L frames of one stream. Masks mean True = valid.

*Backends* are the names users and configs choose (``attention_backend``): ``reference``, ``fused``, ``flex`` and
``auto``. *Implementations* are the modules that compute attention; each defines ``joint(layout, q_a, k_a, v_a,
q_m, k_m, v_m)`` and ``single(q, k, v, lens, window)``:

========================  ======================================================================================
``reference``             dense boolean masks + SDPA, exactly as Algorithm 2 reads (any device)
``cpu_decomposition``     ``fused`` on the CPU: flash attention + log-sum-exp merge + blocked windows
``triton``                ``fused`` on CUDA: a FlashAttention-2 Triton kernel computing the mask from indices
``flex``                  ``torch.nn.attention.flex_attention`` with a block mask from the same rules
========================  ======================================================================================

Modules are imported on first use, so Triton and FlexAttention stay optional. See ``docs/attention.md``.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

__all__ = [
    "BACKENDS",
    "SELF_BACKENDS",
    "IMPLEMENTATIONS",
    "Implementation",
    "flex_available",
    "implementation",
    "resolve",
    "resolve_backend",
    "triton_available",
]

BACKENDS: tuple[str, ...] = ("reference", "fused", "flex")
SELF_BACKENDS: tuple[str, ...] = BACKENDS  # every backend has both joint and self-attention

# (backend, device type) -> implementation; "*" matches any device type
_ROUTES: dict[tuple[str, str], str] = {
    ("reference", "*"): "reference",
    ("fused", "cuda"): "triton",
    ("fused", "*"): "cpu_decomposition",
    ("flex", "*"): "flex",
}


@dataclass(frozen=True)
class Implementation:
    """One attention implementation, its module imported on first use."""

    name: str
    module: str

    def load(self) -> ModuleType:
        return _import(self.module)

    def joint(self, layout, q_a, k_a, v_a, q_m, k_m, v_m):
        """``(out_a [b, h, n, d], out_m [b, h, m, d])`` for a :class:`~jam_flow.nn.attention.JointLayout`."""
        return self.load().joint(layout, q_a, k_a, v_a, q_m, k_m, v_m)

    def single(self, q, k, v, lens, window):
        """One stream ``[b, h, L, d]``: valid keys (``lens [b]`` on ``q``'s device), optional local window."""
        return self.load().single(q, k, v, lens, window)


IMPLEMENTATIONS: dict[str, Implementation] = {
    name: Implementation(name, f"jam_flow.nn.attention.{name}")
    for name in ("reference", "cpu_decomposition", "triton", "flex")
}


@functools.cache
def _import(module: str) -> ModuleType:
    return importlib.import_module(module)


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported (the CUDA implementation of ``fused``)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def flex_available() -> bool:
    """True when ``torch.nn.attention.flex_attention`` can be imported."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device | str, table=None) -> str:
    """Map ``auto`` to the fastest exact backend for ``device``; validate explicit names (``table``: the names
    allowed, default :data:`BACKENDS`).

    ``auto``: on the CPU ``fused`` (the exact decomposition; ``flex`` has no CPU backward, so it is never chosen
    there); on CUDA ``fused`` (the Triton kernel) when Triton imports, else ``flex`` when FlexAttention is
    available, else ``reference``.
    """
    table = BACKENDS if table is None else table
    if backend == "auto":
        if torch.device(device).type != "cuda" or triton_available():
            return "fused"
        return "flex" if flex_available() else "reference"
    if backend not in table:
        raise ValueError(f"attention backend must be one of {sorted([*table, 'auto'])}, got {backend!r}")
    return backend


def resolve(backend: str, device: torch.device | str) -> Implementation:
    """The implementation that runs ``backend`` (``auto`` included) on ``device``."""
    name = resolve_backend(backend, device)
    dev = torch.device(device).type
    impl = _ROUTES.get((name, dev)) or _ROUTES[(name, "*")]
    if impl == "triton" and not triton_available():  # the CPU decomposition cannot run on CUDA
        raise RuntimeError(
            "attention backend 'fused' on cuda needs Triton (pip install triton) - or choose backend='flex' "
            "or 'reference'"
        )
    return IMPLEMENTATIONS[impl]


def implementation(name: str) -> Implementation:
    """An implementation by its own name (tests run ``triton`` on the CPU through Triton's interpreter)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {sorted(IMPLEMENTATIONS)}, got {name!r}")
    return IMPLEMENTATIONS[name]
