"""MLflow as the system of record: the data model (``records.py``), the Ledger and journal ingestion, the
tracking server and UI processes, export/import, store tuning, the code version."""
