"""Where runs execute: ``base`` (the contract and ``make``), ``local``, ``slurm``, ``ray``. Which names exist
is the spec's business (``orchestrator/spec/backends.py``), so that a spec is validated without importing
any backend."""
