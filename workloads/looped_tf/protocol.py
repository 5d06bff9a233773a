"""The evaluation protocol as pure functions of the params: which loop counts a model is evaluated at,
which one is the headline, which masks apply when. The reference (Leiay/looped_transformer) trains with b
loops but evaluates its looped models with T = 500 iterations and reads the last prediction
(jupyter_notebooks/Figures_LR.ipynb, ``eval_looped_model``); on the CPU preset the error at 500 loops is
45% above the one at b, so the two are always reported side by side."""

from __future__ import annotations

from workloads.looped_tf import Params
from workloads.looped_tf.state_mask import Keep


def loops_of(p: Params) -> tuple[int, int]:
    """(b, T) at the end of the curriculum; a standard transformer is one pass with gradient."""
    return (p.n_loops, p.loop_window) if p.model == "looped" else (1, 1)


def long_horizon(p: Params) -> int:
    """The reference's evaluation loop count (a standard model has only its one pass)."""
    return p.eval_horizon if p.model == "looped" else 1


def headline_loops(p: Params) -> int:
    """The loop count ``final_err`` is taken at."""
    return long_horizon(p) if p.headline == "horizon" else loops_of(p)[0]


def evaluated_loops(p: Params) -> list[int]:
    """Every loop count with a full error curve: b, the long horizon and the extras, ascending."""
    if p.model != "looped":
        return [1]
    return sorted({p.n_loops, p.eval_horizon, *p.eval_loops})


def loop_err_positions(p: Params) -> list[int]:
    """The in-context positions k drawn in loop_err.png: d/2, d (where least squares becomes exact) and
    the last, unless given."""
    if p.loop_err_k is not None:
        return sorted(set(p.loop_err_k))
    return sorted({min(max(p.n_dims // 2, 1), p.n_points - 1), min(p.n_dims, p.n_points - 1), p.n_points - 1})


def eval_keep(p: Params) -> Keep | None:
    """The state mask of every evaluation (None: the whole state)."""
    m = p.state_mask
    return Keep(m.keep, m.pairs) if p.model == "looped" and m.keep != "all" else None


def train_keep(p: Params) -> Keep | None:
    """The state mask of training: only with ``during: always``."""
    return eval_keep(p) if p.state_mask.during == "always" else None
