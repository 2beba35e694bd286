"""Data layer (layer 3): mel features, audio I/O, text vocabulary, the clip format (v1), the synthetic corpus
and real-video preprocessing. No Lightning and no network here. See docs/data.md.

Dimension legend: n mel frames, m motion frames (25 fps), k keypoints (21). Masks: True = valid.

Submodules (imported on demand, so ``import jam_flow.data`` stays cheap): ``mel`` (``log_mel``), ``vocoder``
(mel -> waveform), ``audio``, ``text`` (``Vocab``), ``format`` (the clip format), ``dataset`` (``ClipDataset``,
``collate_clips``), ``batching`` (``DynamicBatchSampler``), ``validate``, ``synth``, ``sources`` + ``preprocess``.
"""
