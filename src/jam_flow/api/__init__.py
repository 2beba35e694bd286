"""The Python API (layer 7, above ``render``): :class:`JamFlow` (``from jam_flow import JamFlow``), one method per
task, results with ``.audio`` / ``.sample_rate`` / ``.motion`` / ``.save(dir)``; batched generation for evaluation
(:mod:`jam_flow.api.batch`); and ``jam-flow generate`` (:mod:`jam_flow.api.generate`), a thin layer over it.

Dimension legend: s samples (24 kHz), m motion frames (25 / s), k keypoints (21). Masks mean True = valid.
See docs/inference.md, "Python API".
"""

from jam_flow.api.model import GenerationResult, JamFlow

__all__ = ["JamFlow", "GenerationResult"]
