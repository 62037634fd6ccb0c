"""Inference methods: an objective plus a training schedule, registered in one place.

A method names its objective (:data:`fmvae.objectives.OBJECTIVES`), its schedule (``standard``:
one Adam step on θ and φ per mini-batch; ``lagging``: the aggressive encoder inner loop of Lagging
Inference Networks, docs/methods.md §2), its hyper-parameters (each a per-model value, so a grid trains as
one stack), and the bound used to select restarts on validation data. To benchmark a new method,
add an objective and an entry here; the config's ``methods`` section can then name it.

The ``m2_*`` methods train Kingma et al.'s semi-supervised M2 model (``model: m2``) on labelled
data sets, with the discriminator weight α and the labelled weight γ as grid axes (docs/methods.md §2).
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
    model: str = "vae"  # "vae" (unsupervised) or "m2" (semi-supervised, packed inputs)

    def samples(self, hyper: dict) -> int:
        return int(hyper[self.samples_from]) if self.samples_from else 1

    def slug(self, hyper: dict) -> str:
        """A readable id of a grid point, e.g. ``S20`` or ``T0.05-R10`` (empty without hyper-parameters);
        grid axes of the experiment rather than the method (a fixed ``sigma2``) follow, sorted."""
        keys = [*self.hyper, *sorted(k for k in hyper if k not in self.hyper)]
        return "-".join(f"{k}{hyper[k]:g}" for k in keys)

    @property
    def semi_supervised(self) -> bool:
        return self.model == "m2"

    @property
    def elbo_method(self) -> str:
        """The plain-ELBO method of the same model, whose bound every method also reports."""
        return "m2_vae" if self.semi_supervised else "vae"


M2_HYPER = ("alpha", "gamma")  # discriminator weight α, labelled-bound weight γ (eq. 11)

METHODS = {
    "vae": Method("vae", "elbo", "standard", paper_name="VAE"),
    "iwae": Method("iwae", "iwae", "standard", ("S",), samples_from="S", paper_name="IWAE"),
    "lin": Method("lin", "elbo", "lagging", ("T", "R"), paper_name="LIN"),
    "m2_vae": Method("m2_vae", "m2_elbo", "standard", M2_HYPER, paper_name="VAE", model="m2"),
    "m2_iwae": Method("m2_iwae", "m2_iwae", "standard", ("S", *M2_HYPER), samples_from="S", paper_name="IWAE",
                      model="m2"),
    "m2_lin": Method("m2_lin", "m2_elbo", "lagging", ("T", "R", *M2_HYPER), paper_name="LIN", model="m2"),
}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None
