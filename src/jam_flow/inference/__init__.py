"""Inference (layer 5): model bundles, the JAM-Flow tasks and the output writers (the vocoder is
:mod:`jam_flow.data.vocoder`).

Dimension legend: n mel frames, c mel channels (100), m motion frames, k keypoints (21). Masks mean True = valid.

* :mod:`jam_flow.inference.bundle`: ``load_bundle`` / ``save_export`` / ``ModelBundle``;
* :mod:`jam_flow.inference.tasks`: ``tts``, ``text2av``, ``audio2motion``, ``dub``, ``motion2audio``, ``edit``;
* :mod:`jam_flow.inference.outputs`: ``audio.wav``, ``motion.npy`` + ``motion.json``, ``preview.mp4``;
* :mod:`jam_flow.inference.cli`: the options of ``jam-flow generate`` (the command: :mod:`jam_flow.api.generate`);
* :mod:`jam_flow.inference.result`: ``GenerationResult`` (what a task returns, ``save``).

Submodules are imported on demand (``jam-flow export`` only needs the bundle). See docs/inference.md.
"""
