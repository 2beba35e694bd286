"""JAM-Flow: joint speech (mel) + lip-motion (LivePortrait keypoints) generation with flow matching.

Layers, lowest first (each imports only those below it):
``features`` -> ``nn`` -> ``models`` / ``data`` / ``liveportrait`` -> ``flow`` -> ``inference`` / ``lightning``
-> ``cli``.  ``import jam_flow.models`` never imports Lightning.
"""

__version__ = "0.1.0"
