import os
import sys

# `python -m orchestrator` puts the working directory first on sys.path: a module beside the user's spec
# (colorsys.py) would shadow the standard library. It goes last instead, where a lab's own workload given by
# import path (`workload: mylab.train`) is still found, as from the `orch` script.
_here = [p for p in sys.path if p in ("", ".") or os.path.abspath(p) == os.getcwd()]
sys.path[:] = [p for p in sys.path if p not in _here] + _here

from orchestrator.cli import main  # noqa: E402

main()
