"""Experiment recipes: end-to-end drivers that build a corpus, train, evaluate and write a result JSON (run with
``python -m jam_flow.recipes.<name>`` from the repository root; docs/evaluation.md). No tensors of their own: they
call the ``jam-flow`` commands (subprocesses) and ``jam_flow.eval`` (in process).

* :mod:`jam_flow.recipes.synth`: the synthetic-corpus recipe and its ablations (``make synth-recipe``); its evaluation
  runs, guidance sweep and tables are :mod:`jam_flow.recipes.synth_eval`;
* :mod:`jam_flow.recipes.synth_audio`: the speech recipe (``make synth-recipe-audio``);
* :mod:`jam_flow.recipes.speech`: the two-stage speech recipe in a small world (``make synth-recipe-speech``);
* :mod:`jam_flow.recipes.common`: what they share (paths and commands as results record them, the machine record,
  subprocesses, atomic result files, the ``python -m`` entry).
"""
