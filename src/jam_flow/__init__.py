"""JAM-Flow: joint speech (mel) + lip-motion (LivePortrait keypoints) generation with flow matching.

Layers, lowest first (each imports only those below it; the exact table is in docs/CONVENTIONS.md):
``features`` -> ``nn`` -> ``models`` / ``liveportrait`` -> ``data`` -> ``flow`` -> ``inference`` | ``lightning``
-> ``render`` -> ``eval`` | ``demo`` -> ``cli``.  ``import jam_flow.models`` never imports Lightning.
"""

__version__ = "0.1.0"
