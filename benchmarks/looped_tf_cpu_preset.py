"""Train one variant of configs/looped_tf_cpu.yaml (12,000 steps) through orch's worker, in slices of at
most ``--minutes`` wall time each, so that a shared machine is never held long: each call resumes from the
last checkpoint (a resumed run equals an uninterrupted one, tests/test_looped_tf.py) and stops right after
a checkpoint once its time is up. Call it again until it reports FINISHED.

    .venv/bin/python benchmarks/looped_tf_cpu_preset.py looped [--minutes 5]
    .venv/bin/python benchmarks/looped_tf_cpu_preset.py looped --evaluate smoke    # the step-2,999 snapshot
    .venv/bin/python benchmarks/looped_tf_cpu_preset.py looped --evaluate latest   # the last checkpoint, as is
    .venv/bin/python benchmarks/looped_tf_cpu_preset.py looped --evaluate smoke --mask-sweep 0,1,2,4,8,11

The first 3,000 steps are exactly configs/looped_tf.yaml's (same seed, constant lr, step-driven curricula):
the checkpoint at step 2,999 is kept, and ``--evaluate smoke`` evaluates it as that smoke preset;
``--evaluate latest`` evaluates the latest checkpoint of an unfinished run the same way (a run stopped at
that step, not the 12k result). An evaluation is its own call (a slice's time limit never cuts it short) and
its own file. Each slice's CPU time, wall time and load average go to
benchmarks/results/looped_tf_cpu_preset_<variant>.json with the final metrics;
an evaluation's to benchmarks/results/looped_tf_cpu_preset_<variant>_<smoke|latest>.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from orchestrator.job import worker
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from workloads.looped_tf import Params

ROOT = Path(__file__).resolve().parent
SMOKE_STEPS = 3000
# Checkpoints every 100 steps instead of the preset's 500, so that a slice on a loaded machine always ends
# at one (a slice once spent 7 min without reaching the next of 500); bookkeeping only, the numbers are the same.
CHECKPOINT_EVERY = 100
WORK = Path(os.environ.get("LOOPED_TF_WORK", "/tmp/looped_tf_cpu_preset"))


class StopAfterCheckpoint(KeyboardInterrupt):
    """Raised from a log callback: the worker journals the run as KILLED, the checkpoint stays."""


def load_params(variant: str, **overrides) -> Params:
    import yaml

    from orchestrator.spec.spec import deep_merge, nest

    doc = yaml.safe_load((ROOT.parent / "configs" / "looped_tf_cpu.yaml").read_text())
    tree = deep_merge(nest(doc["params"]), nest(doc["variants"][variant]))
    return Params.model_validate(deep_merge(tree, overrides))


def prepare(path: Path, params: Params, seed: int) -> RunDir:
    run_dir = RunDir(path)
    if not run_dir.spec_file.exists():
        run = Run("looped_tf", params.model_dump(mode="json"), seed, "cpu_preset")
        run_dir.create({"run": run.to_dict(), "run_id": "local", "experiment_id": "0", "cpus": 1, "gpus": 0})
    return run_dir


def final_of(run_dir: RunDir) -> dict | None:
    from orchestrator.job.journal import read_journal

    records, _ = read_journal(run_dir.journal)
    ends = [r for r in records if r["event"] == "end" and r["status"] == "FINISHED"]
    return ends[-1]["final"] if ends else None


def evaluate_checkpoint(checkpoint: Path, path: Path, variant: str, seed: int, doc: dict, key: str, **overrides) -> int:
    """The final evaluation of the model in ``checkpoint``: a run of the same params with steps = its step + 1
    resumes there and only evaluates. Its metrics, step, CPU time and load go to ``doc[key]``."""
    import pickle

    with open(checkpoint, "rb") as f:
        step = pickle.load(f)["step"]
    shutil.rmtree(path, ignore_errors=True)
    eval_dir = prepare(path, load_params(variant, steps=step + 1, checkpoint_every=CHECKPOINT_EVERY, **overrides), seed)
    shutil.copy2(checkpoint, eval_dir.checkpoint)
    load, cpu, wall = os.getloadavg(), time.process_time(), time.monotonic()
    worker.execute(eval_dir.path)
    doc[key] = {
        "trained_steps": step + 1,
        "eval_cpu_s": time.process_time() - cpu,
        "eval_wall_s": time.monotonic() - wall,
        "load_start": load,
        "load_end": os.getloadavg(),
        "metrics": final_of(eval_dir),
    }
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["looped", "standard"])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget of this slice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", choices=["smoke", "latest"], help="evaluate a checkpoint, train nothing")
    parser.add_argument(
        "--mask-sweep",
        help="with --evaluate: also sweep the state mask over these Ns (e.g. 0,1,2,4,8,11), "
        "the headline at b (the sweep costs 2 evaluations per N at the headline loop count)",
    )
    args = parser.parse_args()
    params = load_params(args.variant, checkpoint_every=CHECKPOINT_EVERY)
    work = WORK / args.variant
    run_dir = prepare(work / "run", params, args.seed)
    if args.evaluate:
        checkpoint = work / "checkpoint_smoke.pkl" if args.evaluate == "smoke" else run_dir.checkpoint
        snapshot = work / f"eval_{args.evaluate}.pkl"  # a copy: the training slices keep overwriting theirs
        shutil.copy2(checkpoint, snapshot)
        result: dict = {"variant": args.variant, "seed": args.seed}
        name, overrides = args.evaluate, {}
        if args.mask_sweep:
            name, overrides = (
                f"{args.evaluate}_mask",
                {"mask_sweep": [int(n) for n in args.mask_sweep.split(",")], "headline": "b"},
            )
        step = evaluate_checkpoint(snapshot, work / name, args.variant, args.seed, result, "evaluation", **overrides)
        if args.mask_sweep:  # the figure, next to the numbers
            shutil.copy2(
                work / name / "artifacts" / "mask_sweep.png",
                ROOT / "results" / f"looped_tf_cpu_preset_{args.variant}_{name}.png",
            )
        (ROOT / "results" / f"looped_tf_cpu_preset_{args.variant}_{name}.json").write_text(json.dumps(result, indent=1))
        print("evaluated the checkpoint at step", step)
        return
    out = ROOT / "results" / f"looped_tf_cpu_preset_{args.variant}.json"
    doc = json.loads(out.read_text()) if out.exists() else {"variant": args.variant, "seed": args.seed, "slices": []}
    interval = params.checkpoint_every
    start_wall, start_cpu, load_start = time.monotonic(), time.process_time(), os.getloadavg()

    def slice_guard(step: int, metrics: dict) -> None:
        if "train_loss" not in metrics:
            return  # evaluation logs (loop_err, ...) never stop the run
        if step == SMOKE_STEPS - 1 + params.log_every and run_dir.checkpoint.exists():
            shutil.copy2(run_dir.checkpoint, work / "checkpoint_smoke.pkl")  # the state after step 2,999
        # the first log after a checkpoint: at most log_every steps are redone on resume
        if (step + 1) % interval == params.log_every and time.monotonic() - start_wall > 60 * args.minutes:
            raise StopAfterCheckpoint(f"slice over at step {step}")

    status = worker.execute(run_dir.path, extra_callbacks=[slice_guard])
    slice_info = {
        "status": status,
        "wall_s": time.monotonic() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    doc["slices"].append(slice_info)
    final = final_of(run_dir)
    if final is not None:
        doc["final_12k"] = final
    doc.pop("final_3k", None)  # an evaluation cut short by a slice's time limit (before evaluations had their own call)
    doc["cpu_s_train"] = sum(s["cpu_s"] for s in doc["slices"])
    out.write_text(json.dumps(doc, indent=1))
    print(status, json.dumps(slice_info))


if __name__ == "__main__":
    main()
