"""JAM-Flow: joint speech (mel) + lip-motion (LivePortrait keypoints) generation with flow matching.

Layers, lowest first (each imports only those below it; the exact table is in docs/CONVENTIONS.md):
``features`` -> ``nn`` -> ``models`` / ``liveportrait`` -> ``data`` -> ``flow`` | ``render`` -> ``inference`` |
``lightning`` -> ``video`` -> ``api`` -> ``eval`` | ``demo`` -> ``recipes`` -> ``cli``. ``import jam_flow.models``
never imports Lightning.

``from jam_flow import JamFlow`` is the Python API (:class:`jam_flow.api.JamFlow`), imported lazily on first use
(the one upward edge of this package root), so ``import jam_flow`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["JamFlow", "__version__"]


def __getattr__(name: str):
    if name == "JamFlow":
        from jam_flow.api import JamFlow

        return JamFlow
    raise AttributeError(f"module 'jam_flow' has no attribute {name!r}")
