"""Talking-head rendering with LivePortrait from generated motion (layer 6): ``jam-flow render``.

Dimension legend: m motion frames, k keypoints (21). See docs/render.md.

``render_talking_head(source, motion, audio, weights_dir, out_path, ...)`` is the entry point shared by
``jam-flow render`` and ``jam-flow generate --source IMAGE --liveportrait LP_DIR``.
"""

from jam_flow.render.animate import RenderResult, render_talking_head
from jam_flow.render.io import MotionTrack, load_motion

__all__ = ["MotionTrack", "RenderResult", "load_motion", "render_talking_head"]
