"""evo_topo: does an evolved reservoir topology (W and W_in) beat random reservoirs, reliably across seeds?

The lab's experiment on the cue/position choice task of Chaix-Eichel et al. (arXiv 2401.10849), under the
paper's protocol as its reference code (naomichx/ESN_RL_ICDL) runs it: a reward-learning readout trained
online on 1,000 trials then frozen on 1,000 test trials, the reservoir state carried across trials, output
feedback, state noise, a reservoir bias. Modes: a DEAP genetic search over small ESN topologies (`evolve`,
starting from ``n_init`` neurons and growing), random reservoirs as reservoirpy 0.3 draws them
(`random_baseline`; the paper's M_0 is one, configs/evo_topo_paper.yaml), and a random reservoir of the size
the search starts from and is built around, `n_init` (`random_matched`). Every deviation from the reference
is a Param with a name (docs/evo_topo.md has the point-by-point table).
Modules: task (trials), genome (operators), nets (genome -> reservoir, random reservoirs), readout,
protocol (one train/test draw), evaluate (scores over draws), ga (the DEAP loop), speciation, experiment
(one run), plots (artifacts). Heavy imports (torch, DEAP, matplotlib) happen in ``run`` so that validating
Params stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRIC, MODE = "test_accuracy", "max"
PACKAGES = ("deap", "reservoirpy")  # versions each run records
METRICS = (
    "best_fitness",
    "mean_fitness",
    "std_fitness",
    "n_neurons_best",
    "n_connections_best",
    "n_species",
    "test_accuracy",
    "test_accuracy_std",
    "test_best_first_accuracy",
    "test_best_last_accuracy",
    "test_legal_rate",
    "n_neurons",
    "n_connections",
    "winner_fitness",
)  # per generation, then final
# What a random guess scores (orch compare marks it): a uniformly random position is right 1/4 of the time and
# legal 1/2 of the time (2 of the 4 positions are occupied). Fitness is a validation accuracy.
CHANCE = {
    "test_accuracy": 0.25,
    "test_best_first_accuracy": 0.25,
    "test_best_last_accuracy": 0.25,
    "test_legal_rate": 0.5,
    "best_fitness": 0.25,
    "mean_fitness": 0.25,
    "winner_fitness": 0.25,
}


class Params(BaseModel):
    """Defaults: the paper's protocol at a small GA budget, with the dynamics of the first (hand-grid) version
    of the main job; the presets (configs/evo_topo*.yaml) set every value they use, the dynamics pre-selected
    by configs/evo_topo_random50_tune.yaml. Defaults are kept as they were: a changed default would change the
    key of every recorded run. This is the one source of defaults: GAConfig, Layout, Dynamics and OnlineRule
    are built from it."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["evolve", "random_baseline", "random_matched"] = Field(
        "evolve",
        description="GA search; random reservoirs of `units`; or a random reservoir of `n_init` neurons, "
        "the size the search starts from (read from the config: no search is run)",
    )
    # --- the GA (NEAT-inspired: genes align by neuron index, no innovation numbers) ---
    population: int = Field(16, ge=2, description="individuals per generation")
    generations: int = Field(10, ge=1, description="generations, generation 0 (random genomes) included")
    n_init: int = Field(1, ge=1, description="neurons of the initial genomes (start minimal and grow)")
    max_neurons: int = Field(30, ge=1, description="add-neuron stops at this size")
    values: Literal["ternary", "continuous"] = Field("ternary", description="cells in {-1,0,1} or [-1,1]")
    density: float = Field(0.3, gt=0, le=1, description="probability that a W cell is non-zero")
    input_density: float = Field(0.5, gt=0, le=1, description="probability that a W_in (or bias) cell is non-zero")
    evolve_input: bool = Field(
        True,
        description="W_in is part of the genome; false: drawn once per seed "
        "(+-1 with input_density, by neuron index) and frozen",
    )
    bias: Literal["gene", "fixed", "none"] = Field(
        "gene",
        description="evolved reservoirs' bias: a genome column (an always-on input), one draw per "
        "seed by neuron index (+-bias_scaling with input_density), or none",
    )
    bias_scaling: float = Field(1.0, ge=0, description="bias magnitude (reservoirpy 0.3's default: 1)")
    size_penalty: float = Field(0.0, ge=0, description="fitness = accuracy - size_penalty x neurons")
    cxpb: float = Field(0.5, ge=0, le=1, description="probability that a pair of offspring is crossed over")
    mutpb: float = Field(0.8, ge=0, le=1, description="probability that an offspring's cells are mutated")
    mutation_fraction: float = Field(0.05, gt=0, le=1, description="fraction of cells a mutation redraws")
    p_add_neuron: float = Field(0.3, ge=0, le=1, description="probability that an offspring gains a neuron")
    p_remove_neuron: float = Field(0.05, ge=0, le=1, description="probability that an offspring loses a neuron")
    tournament: int = Field(3, ge=1, description="tournament size of the selection")
    n_elite: int = Field(2, ge=0, description="best genomes copied unchanged (without speciation)")
    hof_size: int = Field(5, ge=1, description="hall of fame size; the winner is its best on fresh draws")
    speciation: bool = Field(False, description="NEAT-style species with fitness sharing")
    species_target: int = Field(4, ge=1, description="species count the threshold adapts toward")
    species_threshold: float = Field(0.5, gt=0, description="initial compatibility threshold")
    stagnation: int = Field(15, ge=1, description="generations without improvement before a species dies")
    # --- the reservoir (defaults: the first main job's hand grid; the presets' come from the random50 sweep) ---
    sr_rescale: bool = Field(
        True,
        description="rescale evolved W to spectral radius sr (no win by a better radius); false: the genome's W as is",
    )
    sr: float = Field(0.5, gt=0, description="spectral radius (M_0: 0.0155)")
    leak: float = Field(0.2, gt=0, le=1, description="leak rate (M_0: 0.055)")
    input_scaling: float = Field(1.0, gt=0, description="factor on W_in")
    carry_state: bool = Field(
        True, description="the state carries over from trial to trial (reference); false: every trial starts from 0"
    )
    fb_scaling: float = Field(
        0.01, ge=0, description="output feedback weights +-fb_scaling (0: no feedback; needs the online readout)"
    )
    fb_connectivity: float = Field(0.01, gt=0, le=1, description="density of the feedback weights")
    noise_rc: float = Field(6e-5, ge=0, description="state noise, standard deviation per step (reference)")
    dtype: Literal["float64", "float32"] = Field("float32", description="engine precision (readouts in float64)")
    # --- random reservoirs (reservoirpy 0.3's Reservoir laws; the lab's 50 units) ---
    units: int = Field(50, ge=1, description="random_baseline: reservoir size")
    rc_connectivity: float = Field(0.128, gt=0, le=1, description="random reservoirs: density of W")
    input_connectivity: float = Field(
        0.5, gt=0, le=1, description="random reservoirs: density of W_in and bias (M_0: 0.96)"
    )
    candidates: int = Field(1, ge=1, description="random reservoirs drawn, the best on validation is kept")
    # --- readout and scoring ---
    readout: Literal["online", "ridge"] = Field(
        "online",
        description="online: the paper's reward-learning readout; ridge: a supervised readout told "
        "the correct position (not the paper's protocol: the task becomes easy)",
    )
    ridge: float = Field(1e-3, gt=0, description="ridge readout: regularisation")
    reward: Literal["deterministic", "stochastic"] = Field(
        "deterministic", description="reward always paid (the reference's task.json), or with probability = cue value"
    )
    eta: float = Field(0.0045, gt=0, description="online readout: learning rate")
    beta: float = Field(16.0, gt=0, description="online readout: softmax inverse temperature")
    r_th: float = Field(0.0, description="online readout: state threshold in the update")
    epsilon_decay: float = Field(0.75, ge=0, le=1, description="online readout: epsilon x this per trial")
    output_connectivity: float = Field(0.865, gt=0, le=1, description="online readout: density of W_out")
    n_train: int = Field(1000, ge=8, description="trials the readout learns from (fitness and test)")
    n_val: int = Field(200, ge=8, description="held-out trials per fitness draw")
    val_draws: int = Field(2, ge=1, description="fitness = mean accuracy over this many train/val draws")
    val_redraw: bool = Field(
        True, description="fresh fitness draws every generation (all re-evaluated); false: the same draws all along"
    )
    n_test: int = Field(1000, ge=8, description="test trials per draw of the final score")
    eval_draws: int = Field(3, ge=1, description="fresh train/test draws the final score averages")
    workers: int | None = Field(
        None,
        ge=1,
        description="processes for population evaluation (None: ctx.cpus)",
        json_schema_extra={"identity": False},
    )  # results do not depend on it

    @model_validator(mode="after")
    def _feedback_needs_online(self):
        if self.fb_scaling > 0 and self.readout != "online":
            raise ValueError(
                "output feedback (fb_scaling > 0) needs readout: online; set fb_scaling: 0 with the ridge readout"
            )
        return self


def run(params: Params, ctx) -> dict[str, float]:
    from workloads.evo_topo.experiment import run_experiment

    return run_experiment(params, ctx)
