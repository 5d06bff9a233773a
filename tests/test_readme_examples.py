"""README's "Bring your own experiment", run exactly as written: its files are written where their first
line says, its shell lines run with `orch`, its notebook snippet runs with Python, in a fresh directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from conftest import ORCH, REPO

SECTION = "## Bring your own experiment"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def section_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return BLOCK.findall(text[start : end if end > 0 else None])


def test_bring_your_own_experiment_works_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")  # "an empty mylab/__init__.py beside it"
    ran = {"files": 0, "commands": 0, "snippets": 0}
    for lang, body in section_blocks():
        first = body.splitlines()[0]
        if lang in ("python", "yaml") and re.fullmatch(r"# [\w./]+\.(py|yaml)", first):
            (tmp_path / first[2:]).write_text(body)
            ran["files"] += 1
        elif lang == "bash":
            for line in filter(None, (ln.split("#")[0].strip() for ln in body.splitlines())):
                argv = shlex.split(line)
                assert argv[0] == "orch", line
                done = subprocess.run(
                    [*ORCH, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                ran["commands"] += 1
        elif lang == "python":
            done = subprocess.run(
                [sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
            assert "params.lr" in done.stdout and "0.05" in done.stdout  # the DataFrame's grouped means
            ran["snippets"] += 1
    assert ran == {"files": 4, "commands": 2, "snippets": 1}
    status = subprocess.run([*ORCH, "status", "cmd", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert [group["finished"] for group in json.loads(status.stdout)["groups"]] == [2, 2]  # 2 lrs x 2 seeds
