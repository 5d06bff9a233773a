"""evo_topo: does an evolved reservoir topology (W and W_in) beat random reservoirs, reliably across seeds?

The lab's experiment (science.md) on the cue/position choice task of Chaix-Eichel et al.: a DEAP genetic
search over small ESN topologies (`mode: evolve`, starting from ``n_init`` neurons and growing) against random
reservoirs drawn with reservoirpy's initialisers (`mode: random_baseline`), both scored the same way: choice
accuracy of a readout trained on the reservoir's last state, the winner re-scored on fresh test trials
averaged over ``eval_draws`` draws. Modules: task (trials), genome (operators), speciation, readout, evaluate
(population fitness on the shared engine workloads/esn), ga (the DEAP loop), plots (artifacts).
Heavy imports (torch, DEAP, matplotlib) happen in ``run`` so that validating Params stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

METRIC, MODE = "test_accuracy", "max"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["evolve", "random_baseline"] = Field("evolve", description="GA search, or random reservoirs")
    # --- the GA ---
    population: int = Field(60, ge=2, description="individuals per generation")
    generations: int = Field(200, ge=1, description="generations, generation 0 (random genomes) included")
    n_init: int = Field(1, ge=1, description="neurons of the initial genomes (start minimal and grow)")
    max_neurons: int = Field(30, ge=1, description="add-neuron stops at this size")
    values: Literal["ternary", "continuous"] = Field("ternary", description="cells in {-1,0,1} or [-1,1]")
    density: float = Field(0.3, gt=0, le=1, description="probability that a W cell is non-zero")
    input_density: float = Field(0.5, gt=0, le=1, description="probability that a W_in cell is non-zero")
    cxpb: float = Field(0.5, ge=0, le=1, description="probability that a pair of offspring is crossed over")
    mutpb: float = Field(0.8, ge=0, le=1, description="probability that an offspring's cells are mutated")
    mutation_fraction: float = Field(0.05, gt=0, le=1, description="fraction of cells a mutation redraws")
    p_add_neuron: float = Field(0.3, ge=0, le=1, description="probability that an offspring gains a neuron")
    p_remove_neuron: float = Field(0.05, ge=0, le=1, description="probability that an offspring loses a neuron")
    tournament: int = Field(3, ge=1, description="tournament size of the selection")
    n_elite: int = Field(2, ge=0, description="best genomes copied unchanged (without speciation)")
    hof_size: int = Field(5, ge=1, description="hall of fame size")
    speciation: bool = Field(False, description="NEAT-style species with fitness sharing")
    species_target: int = Field(4, ge=1, description="species count the threshold adapts toward")
    species_threshold: float = Field(0.5, gt=0, description="initial compatibility threshold")
    stagnation: int = Field(15, ge=1, description="generations without improvement before a species dies")
    # --- the reservoir ---
    sr_rescale: bool = Field(True, description="rescale W to spectral radius sr (no win by a better radius)")
    sr: float = Field(0.5, gt=0, description="spectral radius when sr_rescale (and of random reservoirs)")
    leak: float = Field(0.05, gt=0, le=1, description="leak rate")
    input_scaling: float = Field(1.0, gt=0, description="factor on W_in")
    dtype: Literal["float64", "float32"] = Field("float32", description="engine precision (readouts solve in float64)")
    # --- the random baseline ---
    units: int = Field(50, ge=1, description="random_baseline: reservoir size")
    rc_connectivity: float = Field(0.1, gt=0, le=1, description="random_baseline: density of W")
    input_connectivity: float = Field(0.5, gt=0, le=1, description="random_baseline: density of W_in")
    candidates: int = Field(1, ge=1, description="random_baseline: draws, the best on validation is kept")
    # --- readout and scoring ---
    readout: Literal["ridge", "online"] = Field("ridge", description="supervised ridge or reward learning")
    ridge: float = Field(1e-3, gt=0, description="ridge regularisation")
    reward: Literal["deterministic", "stochastic"] = Field(
        "deterministic", description="online readout: reward always paid, or with probability = cue value")
    eta: float = Field(0.0045, gt=0, description="online readout: learning rate")
    beta: float = Field(16.0, gt=0, description="online readout: softmax inverse temperature")
    epsilon_decay: float = Field(0.75, ge=0, le=1, description="online readout: epsilon x this per trial")
    output_connectivity: float = Field(0.865, gt=0, le=1, description="online readout: density of W_out")
    n_train: int = Field(432, ge=8, description="trials the readout learns from (fitness and test)")
    n_val: int = Field(288, ge=8, description="held-out trials that give the fitness")
    n_test: int = Field(720, ge=8, description="fresh test trials per evaluation draw of the final score")
    eval_draws: int = Field(5, ge=1, description="fresh train/test draws the final score averages")
    workers: int | None = Field(None, ge=1, description="processes for population evaluation (None: ctx.cpus)")


def run(params: Params, ctx) -> dict[str, float]:
    from workloads.evo_topo.experiment import run_experiment

    return run_experiment(params, ctx)
