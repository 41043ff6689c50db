"""Visualisation: figure builders, one figure→logger helper, network dreams, and filter/parameter callbacks.

Modules (import the one you need; none needs a display):
- ``prefalign.viz.images``: ``log_figure`` (W&B / TensorBoard / PNG fallback) and ``save_figure``;
- ``prefalign.viz.figures``: confusion matrix, reliability diagram, preference-pair grid, filters, image grid;
- ``prefalign.viz.dreams``: ``dream``, ``l2_sweep``, ``hybrid_targets``, ``compare_dreams``; ``prefalign.viz.dream_outputs``:
  ``save_dream_outputs`` and the dream figures;
- ``prefalign.viz.dream_command``: the ``dream`` subcommand (``main(argv)``);
- ``prefalign.viz.callbacks``: ``FilterPlot`` and ``ParameterCount``.
"""
