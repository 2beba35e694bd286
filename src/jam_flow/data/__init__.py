"""Data layer (layer 2): mel features, audio I/O, text vocabulary, the clip format (v1), the synthetic corpus
and real-video preprocessing. No Lightning and no network here. See docs/data.md.

Dimension legend: n mel frames, m motion frames (25 fps), k keypoints (21). Masks: True = valid.

Submodules (imported on demand, so ``import jam_flow.data`` stays cheap):
``mel`` (``MelSpectrogram``, ``log_mel``), ``audio`` (``load_audio``, ``save_wav``), ``text`` (``Vocab``),
``format`` (``ClipRecord``, ``read_manifest``, ``load_clip``, ``read_stats``, ``validate_dataset``, ...),
``validate`` (``jam-flow data validate``), ``synth`` (``jam-flow synth-corpus``, ``mouth_opening``),
``sources`` + ``preprocess`` (``jam-flow preprocess``).
"""
