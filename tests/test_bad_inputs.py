"""Every bad input we know of, as a hostile or careless user would type it: each exits 2 with a message
naming where the problem is (the file, or the flag) and what was expected, and writes nothing: no MLflow
store, experiment or run, no run directory, no lock, nothing under the project's mlruns/.

The CLI runs in this process (typer's runner) from a fresh project directory, so the default store
(./mlruns/mlflow.db) would land there: the directory's full listing before and after must be equal.
The figures in docs/reliability.md count this table (``len(CASES)``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

GOOD = {"name": "bad", "workload": "smoke", "params": {"steps": 2}, "seeds": 2}
SPEC = "spec.yaml"


def spec(**changes):
    doc = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def text(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(9))
BOMB_PARAMS = f"name: bad\nworkload: smoke\n{LAUGHS}params:\n  steps: 2\n  offset: *l8\n"
BOMB_TUNE = f"name: bad\nworkload: smoke\n{LAUGHS}tune:\n  space: *l8\n"
BOMB_VARIANTS = f"name: bad\nworkload: smoke\n{LAUGHS}variants:\n  a: {{offset: *l8}}\n"
BIG_GRID = {
    k: list(range(10))
    for k in ("steps", "sleep_s", "noise", "offset", "fail_at_step", "nan_at_step", "checkpoint_every")
}

# (id, spec file content: dict | str | bytes | special, CLI args after the command, message fragments,
#  environment). The command is `submit <spec>` unless args start with "@" (then: the command's own args).
# Fragments: the first names the source (the file, unless it starts with "--" or is an env variable).
CASES: list[tuple[str, object, list[str], list[str], dict[str, str]]] = [
    # -- the file itself -----------------------------------------------------------------------------
    ("malformed-yaml", "name: x\nworkload: [smoke\n", [], ["malformed YAML", "line 3"], {}),
    ("not-a-mapping", "- a\n- b\n", [], ["expected a mapping", "list"], {}),
    ("scalar-document", "42\n", [], ["expected a mapping", "int"], {}),
    ("empty-document", "", [], ["expected a mapping", "NoneType"], {}),
    ("comment-only-document", "# nothing\n", [], ["expected a mapping"], {}),
    ("two-documents", "name: a\n---\nname: b\n", [], ["malformed YAML", "single document"], {}),
    ("tab-indentation", "name: x\nparams:\n\tsteps: 2\n", [], ["malformed YAML"], {}),
    (
        "python-object-tag",
        "name: x\nworkload: !!python/object/apply:os.system ['true']\n",
        [],
        ["YAML tag not allowed"],
        {},
    ),
    ("python-name-tag", "name: x\nworkload: !!python/name:os.system\n", [], ["YAML tag not allowed"], {}),
    ("custom-tag", "name: x\nworkload: !shell smoke\n", [], ["YAML tag not allowed", "!shell"], {}),
    ("unhashable-key", "? [a, b]\n: 1\nname: x\n", [], ["malformed YAML", "unhashable"], {}),
    ("null-byte", "name: x\0\nworkload: smoke\n", [], ["malformed YAML"], {}),
    ("non-utf8-bytes", b"name: caf\xe9\nworkload: smoke\n", [], ["not valid UTF-8", "line 1", "UTF-8"], {}),
    (
        "latin1-in-params",
        b"name: x\nworkload: smoke\nparams:\n  steps: 2 # \xff\n",
        [],
        ["not valid UTF-8", "line 4"],
        {},
    ),
    ("utf16-file", text(GOOD).encode("utf-16"), [], ["UTF-16", "UTF-8"], {}),
    ("utf16-be-file", b"\xfe\xff" + text(GOOD).encode("utf-16-be"), [], ["UTF-16"], {}),
    ("file-over-1mib", "name: x\nworkload: smoke\n" + "# " + "x" * (1 << 20) + "\n", [], ["MiB", "at most 1"], {}),
    ("dev-zero-as-spec", "@/dev/zero", [], ["not a regular file"], {}),
    ("directory-as-spec", "@.", [], ["not a regular file"], {}),
    ("missing-file", "@nowhere.yaml", [], ["cannot read"], {}),
    ("fifo-as-spec", "@fifo", [], ["not a regular file"], {}),
    (
        "nesting-too-deep",
        "name: x\nparams: " + "[" * 2000 + "]" * 2000 + "\n",
        [],
        ["malformed YAML", "nesting depth"],
        {},
    ),
    (
        "nesting-deep-mappings",
        "name: x\nworkload: smoke\nparams:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(80))
        + "  " * 81
        + "v: 1\n",
        [],
        ["nested too deeply"],
        {},
    ),
    # -- duplicate keys --------------------------------------------------------------------------------
    ("duplicate-name", "name: a\nworkload: smoke\nname: b\n", [], ["duplicate key 'name'", "line 3", "line 1"], {}),
    (
        "duplicate-param",
        "name: a\nworkload: smoke\nparams:\n  steps: 2\n  steps: 3\n",
        [],
        ["duplicate key 'steps'", "line 5"],
        {},
    ),
    (
        "duplicate-variants-block",
        "name: a\nworkload: smoke\nvariants:\n  a: {offset: 1}\nvariants:\n  b: {offset: 2}\n",
        [],
        ["duplicate key 'variants'", "line 5"],
        {},
    ),
    (
        "duplicate-variant-name",
        "name: a\nworkload: smoke\nvariants:\n  a: {offset: 1}\n  a: {offset: 2}\n",
        [],
        ["duplicate key 'a'"],
        {},
    ),
    (
        "duplicate-resource",
        "name: a\nworkload: smoke\nresources:\n  cpus: 1\n  cpus: 2\n",
        [],
        ["duplicate key 'cpus'"],
        {},
    ),
    (
        "duplicate-in-flow-mapping",
        "name: a\nworkload: smoke\nparams: {steps: 1, steps: 2}\n",
        [],
        ["duplicate key 'steps'"],
        {},
    ),
    # -- alias bombs and sizes -----------------------------------------------------------------------
    ("billion-laughs-params", BOMB_PARAMS, [], ["expands to more than", "aliases"], {}),
    ("list-bomb-tune", BOMB_TUNE, [], ["expands to more than"], {}),
    ("bomb-under-variants", BOMB_VARIANTS, [], ["expands to more than"], {}),
    (
        "billion-seeds",
        spec(seeds=1_000_000_000),
        [],
        ["seeds", "1,000,000,000 runs", "limit of 10,000", "--max-runs"],
        {},
    ),
    ("ten-million-grid", spec(grid=BIG_GRID, seeds=1), [], ["10,000,000 runs", "limit"], {}),
    ("grid-times-seeds-over-cap", spec(grid={"offset": list(range(200))}, seeds=100), [], ["20,000 runs"], {}),
    (
        "variants-times-seeds-over-cap",
        spec(variants={f"v{i}": {"offset": i} for i in range(11)}, seeds=1000),
        [],
        ["11,000 runs"],
        {},
    ),
    ("seeds-cli-over-cap", spec(), ["--seeds", "20000"], ["20,000 runs", "limit"], {}),
    ("max-runs-lowered", spec(seeds=5), ["@--max-runs", "3", "submit", SPEC], ["5 runs", "limit of 3"], {}),
    ("max-runs-env-lowered", spec(seeds=5), [], ["5 runs", "limit of 4", "ORCH_MAX_RUNS"], {"ORCH_MAX_RUNS": "4"}),
    # -- names the workload does not know -------------------------------------------------------------
    (
        "metric-never-reported",
        spec(metric={"name": "final_los"}),
        [],
        ["metric.name", "never reports 'final_los'", "did you mean 'final_loss'"],
        {},
    ),
    ("tune-unknown-key-on-submit", spec(tune={"spaec": {}}), [], ["tune.spaec", "did you mean 'space'"], {}),
    (
        "command-bad-placeholder",
        "name: c\ncommand: [python, t.py, '{lr}']\nmetric: {name: loss}\n",
        [],
        ["command[2]", "placeholder '{lr}' names no param"],
        {},
    ),
    ("command-without-metric", "name: c\ncommand: [python, t.py]\n", [], ["needs 'metric:"], {}),
    (
        "workload-and-command",
        "name: c\nworkload: smoke\ncommand: [x]\nmetric: {name: loss}\n",
        [],
        ["exactly one of 'workload'"],
        {},
    ),
    (
        "workload-module-missing",
        "name: c\nworkload: nolab.train\n",
        [],
        ["unknown workload 'nolab.train'", "no module 'nolab.train'"],
        {},
    ),
    # -- numbers that are not numbers ------------------------------------------------------------------
    ("nan-param", spec(params={"steps": 2, "offset": float("nan")}), [], ["params.offset", "finite number"], {}),
    ("inf-param", spec(params={"steps": 2, "noise": float("inf")}), [], ["params.noise", "finite"], {}),
    ("minus-inf-param", "name: bad\nworkload: smoke\nparams: {offset: -.inf}\n", [], ["params.offset", "finite"], {}),
    (
        "huge-float-is-inf",
        "name: bad\nworkload: smoke\nparams: {offset: 1.0e400}\n",
        [],
        ["params.offset", "finite"],
        {},
    ),
    ("inf-mem", spec(resources={"mem_gb": float("inf")}), [], ["resources.mem_gb", "finite"], {}),
    ("nan-in-variant", spec(variants={"a": {"offset": float("nan")}}), [], ["variants.a.offset", "finite"], {}),
    ("nan-in-grid", spec(grid={"offset": [0.0, float("nan")]}), [], ["grid.offset.1", "finite"], {}),
    (
        "nan-in-tune",
        spec(tune={"space": {"offset": {"uniform": [0, float("inf")]}}}),
        [],
        ["tune.space.offset", "finite"],
        {},
    ),
    ("set-nan", spec(), ["--set", "offset=.nan"], ["--set", "offset", "finite"], {}),
    ("set-inf", spec(), ["--set", "noise=.inf"], ["--set", "noise", "finite"], {}),
    (
        "set-minus-inf-resource",
        spec(),
        ["--set", "resources.mem_gb=-.inf"],
        ["--set", "resources.mem_gb", "finite"],
        {},
    ),
    # -- names and places on the disk ----------------------------------------------------------------
    ("name-dotdot", spec(name=".."), [], ["name", "not a usable experiment name"], {}),
    ("name-dot", spec(name="."), [], ["name", "not a usable"], {}),
    ("name-hidden", spec(name=".hidden"), [], ["name", "letter or digit"], {}),
    ("name-300-chars", spec(name="a" * 300), [], ["name", "at most 100 characters", "300"], {}),
    ("name-empty", spec(name=""), [], ["name", "pattern"], {}),
    ("name-slash", spec(name="a/b"), [], ["name", "pattern"], {}),
    ("name-not-string", spec(name=123), [], ["name", "string"], {}),
    ("set-name-dotdot", spec(), ["--set", "name=.."], ["--set", "name", "not a usable"], {}),
    ("workdir-proc", spec(workdir="/proc/orch"), [], ["workdir", "pseudo-filesystem"], {}),
    ("workdir-sys", spec(workdir="/sys/orch/jobs"), [], ["workdir", "pseudo-filesystem"], {}),
    ("workdir-dev", spec(workdir="/dev/orch"), [], ["workdir", "pseudo-filesystem"], {}),
    ("workdir-under-a-file", spec(workdir="afile/jobs"), [], ["workdir", "not a directory"], {}),
    ("workdir-empty", spec(workdir=""), [], ["workdir", "empty"], {}),
    ("workdir-not-string", spec(workdir=[1]), [], ["workdir", "string"], {}),
    # -- tracking URIs ---------------------------------------------------------------------------------
    (
        "tracking-uri-garbage",
        spec(),
        ["--tracking-uri", "garbage"],
        ["--tracking-uri", "not a tracking URI", "sqlite:///"],
        {},
    ),
    ("tracking-uri-ftp", spec(), ["--tracking-uri", "ftp://example.org/x"], ["--tracking-uri", "ftp://"], {}),
    ("tracking-uri-env-garbage", spec(), [], ["MLFLOW_TRACKING_URI", "garbage"], {"MLFLOW_TRACKING_URI": "garbage"}),
    (
        "tracking-uri-dead-port",
        spec(),
        ["--tracking-uri", "http://127.0.0.1:1"],
        ["--tracking-uri", "no MLflow server answers"],
        {},
    ),
    ("tracking-uri-in-spec", spec(tracking={"uri": "garbage"}), [], ["tracking.uri", "not a tracking URI"], {}),
    (
        "tracking-uri-spec-dead",
        spec(tracking={"uri": "http://127.0.0.1:9"}),
        [],
        ["tracking.uri", "no MLflow server"],
        {},
    ),
    (
        "tracking-uri-relative-sqlite",
        spec(),
        ["--tracking-uri", "sqlite:/x.db"],
        ["--tracking-uri", "not a tracking URI"],
        {},
    ),
    ("tracking-not-mapping", spec(tracking="sqlite:///x.db"), [], ["tracking", "Input should be"], {}),
    (
        "tracking-unknown-field",
        spec(tracking={"url": "x"}),
        [],
        ["tracking.url", "unknown field", "did you mean 'uri'"],
        {},
    ),
    (
        "status-garbage-uri",
        None,
        ["@status", "bad", "--tracking-uri", "garbage"],
        ["--tracking-uri", "not a tracking URI"],
        {},
    ),
    # -- messages that must point at the right place -----------------------------------------------------
    (
        "metric-typo-field",
        spec(metric={"name": "final_loss", "mod": "max"}),
        [],
        ["metric.mod", "did you mean 'mode'", "expected one of: name, mode"],
        {},
    ),
    (
        "metric-bad-mode",
        spec(metric={"name": "final_loss", "mode": "maximize"}),
        [],
        ["metric.mode", "'min' or 'max'"],
        {},
    ),
    ("metric-not-mapping", spec(metric="final_loss"), [], ["metric", "Input should be"], {}),
    ("seeds-word", spec(seeds="three"), [], ["seeds", "positive integer", "'three'"], {}),
    ("seeds-float", spec(seeds=2.5), [], ["seeds", "positive integer"], {}),
    ("seeds-list", spec(seeds=[1, 2]), [], ["seeds", "positive integer"], {}),
    ("seeds-base-word", spec(seeds={"count": 2, "base": "x"}), [], ["seeds.base", "integer"], {}),
    ("set-wrong-type", spec(), ["--set", "steps=abc"], ["--set", "params.steps", "integer"], {}),
    (
        "set-param-out-of-range",
        spec(),
        ["--set", "steps=0"],
        ["--set", "params.steps", "greater than or equal to 1"],
        {},
    ),
    ("set-resource-wrong-type", spec(), ["--set", "resources.cpus=abc"], ["--set", "resources.cpus", "integer"], {}),
    ("set-seeds-word", spec(), ["--set", "seeds=many"], ["--set", "seeds", "positive integer"], {}),
    ("set-into-scalar", spec(), ["--set", "resources.cpus.x=1"], ["--set", "resources.cpus", "integer"], {}),
    ("set-empty-key", spec(), ["--set", "=3"], ["--set", "KEY=VALUE"], {}),
    # -- requests this machine can never meet, or that mean nothing here ---------------------------------
    (
        "cpus-more-than-machine",
        spec(resources={"cpus": 1000}),
        [],
        ["resources.cpus", "1000 cores", "this machine has"],
        {},
    ),
    (
        "gpus-none-here",
        spec(resources={"gpus": 4}),
        [],
        ["resources.gpus", "4 GPUs", "this machine has 0"],
        {"CUDA_VISIBLE_DEVICES": ""},
    ),
    ("set-cpus-more-than-machine", spec(), ["--set", "resources.cpus=999"], ["resources.cpus", "999 cores"], {}),
    ("cluster-with-local", spec(), ["--cluster", "mycluster"], ["--cluster", "slurm", "--backend slurm"], {}),
    # -- the cases of tests/test_spec_errors.py before this file -----------------------------------------
    ("unknown-top-level", spec(paramz={"steps": 2}), [], ["paramz", "unknown field", "did you mean 'params'"], {}),
    ("missing-name", spec(name=None), [], ["name", "Field required"], {}),
    ("bad-name-chars", spec(name="a b/c"), [], ["name", "pattern"], {}),
    ("missing-workload", spec(workload=None), [], ["workload"], {}),
    (
        "unknown-workload",
        spec(workload="smok"),
        [],
        ["workload", "unknown workload 'smok'", "did you mean 'smoke'"],
        {},
    ),
    ("workload-not-string", spec(workload=42), [], ["workload", "string"], {}),
    ("unknown-param", spec(params={"stepz": 3}), [], ["params.stepz", "did you mean 'steps'"], {}),
    ("wrong-param-type", spec(params={"steps": "many"}), [], ["params.steps", "integer"], {}),
    ("param-out-of-range", spec(params={"steps": 0}), [], ["params.steps", "greater than or equal to 1"], {}),
    ("param-negative-noise", spec(params={"noise": -1}), [], ["params.noise", "greater than or equal to 0"], {}),
    ("params-not-mapping", spec(params=[1, 2]), [], ["params", "dictionary"], {}),
    ("zero-seeds", spec(seeds=0), [], ["seeds.count", "greater than 0"], {}),
    ("negative-seeds", spec(seeds=-3), [], ["seeds.count", "greater than 0"], {}),
    ("negative-seed-base", spec(seeds={"count": 2, "base": -1}), [], ["seeds.base", "greater than or equal to 0"], {}),
    ("seeds-unknown-field", spec(seeds={"count": 2, "bsae": 1}), [], ["seeds.bsae", "did you mean 'base'"], {}),
    ("seeds-cli-zero", spec(), ["--seeds", "0"], ["--seeds", "positive"], {}),
    ("seeds-cli-negative", spec(), ["--seeds", "-2"], ["--seeds", "positive"], {}),
    (
        "unknown-variant-field",
        spec(variants={"a": {"offset": 1}, "b": {"ofset": 2}}),
        [],
        ["variants.b.ofset", "did you mean 'offset'"],
        {},
    ),
    ("variant-wrong-type", spec(variants={"a": {"noise": "loud"}}), [], ["variants.a.noise", "number"], {}),
    (
        "duplicate-variants",
        spec(variants={"a": {"offset": 1}, "b": {"offset": 1.0}}),
        [],
        ["variants.b", "same params as variant 'a'"],
        {},
    ),
    ("variant-equals-base", spec(variants={"a": {}, "b": {"steps": 2}}), [], ["variants.b", "same params"], {}),
    ("variants-not-mapping", spec(variants=["a", "b"]), [], ["variants", "dictionary"], {}),
    ("variant-not-mapping", spec(variants={"a": 3}), [], ["variants.a", "dictionary"], {}),
    ("grid-key-not-param", spec(grid={"lr": [1, 2]}), [], ["grid.lr", "not a param"], {}),
    ("empty-grid-list", spec(grid={"offset": []}), [], ["grid.offset", "empty list"], {}),
    ("grid-not-list", spec(grid={"offset": 3}), [], ["grid.offset", "list"], {}),
    ("grid-bad-value", spec(grid={"steps": [1, "x"]}), [], ["grid.steps", "integer"], {}),
    ("grid-not-mapping", spec(grid=[1, 2]), [], ["grid", "dictionary"], {}),
    ("unknown-backend", spec(backend="kubernetes"), [], ["backend", "local"], {}),
    ("backend-not-string", spec(backend=3), [], ["backend", "string"], {}),
    ("unknown-backend-cli", spec(), ["--backend", "pbs"], ["--backend", "unknown backend 'pbs'"], {}),
    ("negative-resources", spec(resources={"cpus": -1}), [], ["resources.cpus", "greater than 0"], {}),
    ("zero-mem", spec(resources={"mem_gb": 0}), [], ["resources.mem_gb", "greater than 0"], {}),
    ("zero-time", spec(resources={"time_min": 0}), [], ["resources.time_min", "greater than 0"], {}),
    ("negative-gpus", spec(resources={"gpus": -1}), [], ["resources.gpus", "greater than or equal to 0"], {}),
    ("cpus-word", spec(resources={"cpus": "two"}), [], ["resources.cpus", "integer"], {}),
    ("unknown-resource", spec(resources={"gpu": 1}), [], ["resources.gpu", "unknown field", "did you mean 'gpus'"], {}),
    ("set-missing-key", spec(), ["--set", "params.nope=1"], ["--set", "params.nope", "no such param"], {}),
    ("set-bad-syntax", spec(), ["--set", "steps"], ["--set", "KEY=VALUE"], {}),
    ("set-bad-yaml", spec(), ["--set", "steps=[1"], ["--set", "malformed YAML"], {}),
    ("max-parallel-zero", spec(), ["--max-parallel", "0"], ["--max-parallel", "at least 1"], {}),
    # -- other commands --------------------------------------------------------------------------------
    ("status-no-store", None, ["@status", "bad"], ["no MLflow store"], {}),
    ("logs-no-store", None, ["@logs", "0123abc"], ["no MLflow store"], {}),
    ("cancel-no-store", None, ["@cancel", "bad"], ["no MLflow store"], {}),
    ("compare-no-store", None, ["@compare", "bad"], ["no MLflow store"], {}),
    ("sync-not-a-directory", None, ["@sync", "--workdir", "nowhere"], ["nowhere", "not a directory"], {}),
    ("status-of-bad-spec", "name: a\nname: b\n", ["@status", SPEC], ["duplicate key 'name'"], {}),
    ("run-nan-set", spec(), ["@run", SPEC, "--set", "offset=.nan"], ["--set", "offset", "finite"], {}),
    ("run-bad-name", spec(name=".."), ["@run", SPEC], ["name", "not a usable"], {}),
    ("run-unknown-variant", spec(), ["@run", SPEC, "--variant", "nope"], ["--variant", "unknown variant"], {}),
    (
        "server-start-bad-store",
        None,
        ["@server", "start", "--backend-store-uri", "ftp://x"],
        ["--backend-store-uri"],
        {},
    ),
    ("dry-run-of-a-bomb", BOMB_PARAMS, ["--dry-run"], ["expands to more than"], {}),
    ("dry-run-over-cap", spec(seeds=10**6), ["--dry-run"], ["1,000,000 runs"], {}),
]


NOT_IN_THE_FILE = {"tracking-uri-spec-dead"}


def write_spec(root: Path, content: object) -> None:
    path = root / SPEC
    if content is None:
        return
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(text(content))  # type: ignore[arg-type]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fresh project directory as the working directory, with no tracking URI or cap in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # set (empty: the default limit), so that teardown also removes what `orch --max-runs` puts there
    monkeypatch.setenv("ORCH_MAX_RUNS", "")
    (tmp_path / "afile").write_text("a file, not a directory\n")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_the_table_is_large():
    assert len(CASES) >= 100, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES), "case ids are unique"


@pytest.mark.parametrize("case_id,content,args,expected,env", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_says_where_and_what_and_writes_nothing(
    project, monkeypatch, case_id, content, args, expected, env
):
    from orchestrator.cli import app

    if isinstance(content, str) and content.startswith("@"):
        argv = ["submit", content[1:], *args]
    elif args and args[0].startswith("@"):
        write_spec(project, content)
        argv = [args[0][1:], *args[1:]]
    else:
        write_spec(project, content)
        argv = ["submit", SPEC, *args]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = listing(project)
    result = CliRunner().invoke(app, argv)
    message = " ".join(result.output.split())
    assert result.exit_code == 2, f"exit {result.exit_code}: {message}\n{result.exception!r}"
    assert message.startswith("error: "), message
    # the source is a flag or an environment variable when the first fragment is one, else the file (but for
    # a server the spec names that does not answer: that is found once the spec was read, with the URI)
    source = expected[0] if expected[0].startswith("--") or expected[0].isupper() else None
    if (
        source is None
        and case_id not in NOT_IN_THE_FILE
        and (project / SPEC).exists()
        and argv[0] in ("submit", "run")
        and "--set" not in expected
    ):
        assert SPEC in message, f"the message must name the file: {message}"
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert listing(project) == before, "bad input must create nothing"
    assert "Traceback" not in result.output
