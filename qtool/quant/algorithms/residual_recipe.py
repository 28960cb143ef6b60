"""The flags a report names for a transformer whose residual stream shares one 8-bit grid: a grid per hidden
channel, and of the two float rewrites only those that find something to rewrite in this graph. flan-t5's
gated-GELU MLPs (GELU(x·Wi0) * x·Wi1) have no MatMul -> activation -> MatMul for outlier_split, and the
report had sent a user to an algorithm that then warned "nothing split"."""

from __future__ import annotations

from qtool.quant.algorithms import outlier_split, smoothquant
from qtool.quant.graph_facts import GraphFacts


def residual_recipe(facts: GraphFacts) -> str:
    algorithms = [name for name, found in (("outlier_split", outlier_split.find_mlps), ("smoothquant",
                  smoothquant.find_sites)) if found(facts)]  # fmt: skip
    return " ".join(["--use_per_channel_residual", *(f"--apply_algorithms {name}" for name in algorithms)])
