"""Inference methods: an objective plus a training schedule, registered in one place.

A method names its objective (:data:`fmvae.objectives.OBJECTIVES`), its schedule (``standard``:
one Adam step on θ and φ per mini-batch; ``lagging``: the aggressive encoder inner loop of Lagging
Inference Networks, METHODS §2), its hyper-parameters (each a per-model value, so a grid trains as
one stack), and the bound used to select restarts on validation data. To benchmark a new method,
add an objective and an entry here; the config's ``methods`` section can then name it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    objective: str  # key of fmvae.objectives.OBJECTIVES
    schedule: str  # "standard" or "lagging"
    hyper: tuple[str, ...] = ()  # hyper-parameter names, e.g. ("S",) or ("T", "R")
    samples_from: str | None = None  # the hyper-parameter that sets the number of importance samples
    paper_name: str = ""

    def samples(self, hyper: dict) -> int:
        return int(hyper[self.samples_from]) if self.samples_from else 1

    def slug(self, hyper: dict) -> str:
        """A readable id of a grid point, e.g. ``S20`` or ``T0.05-R10`` (empty without hyper-parameters)."""
        return "-".join(f"{k}{hyper[k]:g}" for k in self.hyper)


METHODS = {
    "vae": Method("vae", "elbo", "standard", paper_name="VAE"),
    "iwae": Method("iwae", "iwae", "standard", ("S",), samples_from="S", paper_name="IWAE"),
    "lin": Method("lin", "elbo", "lagging", ("T", "R"), paper_name="LIN"),
}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None
