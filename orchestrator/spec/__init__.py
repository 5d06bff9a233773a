"""What is to run: the spec (``spec.py``), its expansion into runs (``plan.py``), the workloads and backends
by name (``registry.py``, ``backends.py``) and the cluster profiles (``profiles.py``). Reads files only."""
