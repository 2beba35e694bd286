"""Whole videos in one command: ``jam-flow dub-video`` (a new script timed to a video's lips) and
``jam-flow animate`` (a talking head from speech or text), at any length.

Dimension legend: see :mod:`jam_flow.video.pipeline` (m motion frames, s samples). No masks here.
"""

from jam_flow.video.pipeline import ANIMATE_FORMAT, DUB_FORMAT, animate, dub_video, load_liveportrait_parts

__all__ = ["ANIMATE_FORMAT", "DUB_FORMAT", "animate", "dub_video", "load_liveportrait_parts"]
