"""The lab's workloads, shipped with orch: each subpackage registered in pyproject.toml's ``orch.workloads``
entry points is one experiment family (the contract: orchestrator/spec/registry.py); ``esn`` is the reservoir
engine two of them share, not a workload itself. orch's core never imports this package."""
