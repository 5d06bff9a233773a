"""What runs inside a job, importing no MLflow: the worker, the RunContext a workload sees, the run directory
and its journal, the live pusher, process liveness."""
