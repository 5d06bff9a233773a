"""The two terminals orch writes to (results on stdout, errors and warnings on stderr). Their own module,
so that `orch --help` and the bad-input handler load rich's console and nothing of tables or progress."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
