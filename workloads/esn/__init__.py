"""Shared echo state network engine for the ESN workloads (evo_topo, esn_distill).

- ``reservoir``: batched leaky-tanh reservoir (`esn_states`), reservoirpy-based random reservoirs
  (`random_reservoir`), spectral radius helpers. Checked against reservoirpy's ``Reservoir`` in
  tests/test_esn_engine.py.
- ``ridge``: streaming ridge accumulator and batched ``ridge_solve`` (owned by esn_distill).

Not a workload itself (registered in no ``orch.workloads`` entry point).
"""
