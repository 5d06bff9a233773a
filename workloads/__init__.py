"""Workloads: each subpackage is one experiment family (see orchestrator/spec/registry.py for the contract).

Shared engines that are not workloads themselves are listed in NOT_WORKLOADS."""

NOT_WORKLOADS = {"esn"}
