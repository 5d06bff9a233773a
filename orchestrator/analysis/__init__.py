"""Reading results: per-group status, statistics across seeds, comparisons with verdicts, the report and
its plots, ``--where`` filters."""
