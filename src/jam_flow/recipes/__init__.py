"""Experiment recipes: end-to-end drivers that build a corpus, train, evaluate and write a result JSON (run with
``python -m jam_flow.recipes.<name>`` from the repository root; docs/evaluation.md). No tensors of their own: they
call the ``jam-flow`` commands (subprocesses) and ``jam_flow.eval`` (in process).

* :mod:`jam_flow.recipes.synth`: the synthetic-corpus recipe and its ablations (``make synth-recipe``);
* :mod:`jam_flow.recipes.synth_audio`: the speech recipe (``make synth-recipe-audio``);
"""
