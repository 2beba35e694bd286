"""JAM-Flow joint attention (paper §4.4, Algorithm 2) and masked self-attention, with interchangeable backends.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream.
Tensors are ``[b, h, L, d]``; lengths are ``[b]`` int (frames ``< len`` are valid); masks mean True = valid.

Files (``docs/attention.md`` has the algorithms and the numbers):

- ``dispatch``: the public calls :func:`joint_attention`, :func:`joint_attention_in`, :func:`self_attention`;
- ``layout``: :class:`JointLayout`, a batch's lengths, window, switches and frame ratio, checked once;
- ``registry``: backend names (``reference``, ``fused``, ``flex``, ``auto``) -> implementation per device;
- implementations ``reference`` (dense masks, the definition), ``cpu_decomposition`` (``fused`` on the CPU),
  ``triton`` + ``triton_kernels`` (``fused`` on CUDA), ``flex`` (FlexAttention).

The dense reference masks are :mod:`jam_flow.nn.masks`. Every backend: padded query rows return zeros, padded keys
get no weight, nothing is NaN (also for a sample whose length is 0).
"""

from jam_flow.features import first_audio_frame, frame_of, frame_ratio
from jam_flow.nn.attention.dispatch import joint_attention, joint_attention_in, self_attention
from jam_flow.nn.attention.layout import JointLayout
from jam_flow.nn.attention.registry import (
    BACKENDS,
    IMPLEMENTATIONS,
    SELF_BACKENDS,
    flex_available,
    implementation,
    resolve,
    resolve_backend,
    triton_available,
)

__all__ = [
    "BACKENDS",
    "IMPLEMENTATIONS",
    "JointLayout",
    "SELF_BACKENDS",
    "first_audio_frame",
    "flex_available",
    "frame_of",
    "frame_ratio",
    "implementation",
    "joint_attention",
    "joint_attention_in",
    "resolve",
    "resolve_backend",
    "self_attention",
    "triton_available",
]
