"""``orch tune``: a Ray Tune sweep over the same YAML spec and the same workloads.

The ``tune:`` section of a spec says what to search (``space``, dotted param keys), how (``search``,
``scheduler``) and what to optimise (``metric``, ``mode``). A trial runs its params on ``seeds_per_trial``
seeds through the ordinary worker (same run directories, journals and determinism as ``orch submit``);
every ``ctx.log`` step reports the mean over those seeds to Tune (so ASHA can stop bad trials early), and
the trial's score is the mean of the final metric over the seeds: tuned for robustness, not for luck.

MLflow stays single-writer: the trials only write run directories; a Tune callback in this (driver)
process records one parent run per sweep and one child per trial (params, reported history, final status,
early stops tagged). At the end: a table of the top trials and ``best.yaml``, a complete spec with the
best params for ``orch submit best.yaml --seeds N``. ``--resume`` continues a sweep whose driver died.

Rooms: ``section`` (the spec's ``tune:`` schema), ``trial`` (what runs inside a Ray trial), ``recorder`` (the
MLflow callback in the driver), ``sweep`` (the driver: Tuner, summary, ``best.yaml``).
"""
