"""Inference methods: an objective plus a training schedule, registered in one place.

A method names its objective (:data:`fmvae.objectives.OBJECTIVES`), its schedule (``standard``:
one Adam step on θ and φ per mini-batch; ``lagging``: the aggressive encoder inner loop of Lagging
Inference Networks, docs/methods.md §2), its hyper-parameters (each a per-model value, so a grid trains as
one stack), and the bound used to select restarts on validation data.

A method from outside the package (docs/adding-a-method.md) is named in the config's ``methods``
by its import path, ``"package.module:attribute"``, or by a name registered in the entry-point
group ``fmvae.methods``; the attribute is a :class:`Method` or a function of no arguments that
returns one, whose ``objective`` is then the objective function itself (the contract of
:mod:`fmvae.objectives`: ``objective(model, x, eps, hyper) -> (M, N)`` per model and point).
:func:`check_contract` probes it on a two-model stack before any job starts.

The ``m2_*`` methods train Kingma et al.'s semi-supervised M2 model (``model: m2``) on labelled
data sets, with the discriminator weight α and the labelled weight γ as grid axes (docs/methods.md §2).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

ENTRY_POINT_GROUP = "fmvae.methods"
SCHEDULES = ("standard", "lagging")
MODELS = ("vae", "m2")


@dataclass(frozen=True)
class Method:
    name: str
    objective: str | Callable  # key of fmvae.objectives.OBJECTIVES, or (outside methods) the function
    schedule: str  # "standard" or "lagging"
    hyper: tuple[str, ...] = ()  # hyper-parameter names, e.g. ("S",) or ("T", "R")
    samples_from: str | None = None  # the hyper-parameter that sets the number of importance samples
    paper_name: str = ""
    model: str = "vae"  # "vae" (unsupervised) or "m2" (semi-supervised, packed inputs)

    @property
    def objective_fn(self) -> Callable:
        """The objective function: ``objective(model, x, eps, hyper)`` -> (M, N) bound values."""
        if callable(self.objective):
            return self.objective
        from fmvae.objectives import OBJECTIVES  # imported late: this module is a leaf

        return OBJECTIVES[self.objective]

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


def _entry_points() -> dict:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load(name: str):
    """The object an outside method's name points at: ``module:attribute``, or an entry point."""
    if ":" not in name:
        points = _entry_points()
        if name not in points:
            raise ValueError(f"unknown method {name!r}; built in: {', '.join(METHODS)}; registered in the entry-point "
                             f"group {ENTRY_POINT_GROUP!r}: {', '.join(points) or 'none'}; or give an import path "
                             "'package.module:attribute'")
        try:
            return points[name].load()
        except Exception as err:  # any failure of the user's import is reported by name
            raise ValueError(f"method {name!r}: its entry point {points[name].value!r} fails to load: "
                             f"{type(err).__name__}: {err}") from err
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"method {name!r}: cannot import module {module_name!r}: {type(err).__name__}: {err}") from err
    try:
        return functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise ValueError(f"method {name!r}: module {module_name!r} has no attribute {attribute!r}") from None


@functools.cache
def get(name: str) -> Method:
    """The method a config names: built in, registered as an entry point, or ``module:attribute``."""
    if name in METHODS:
        return METHODS[name]
    found = _load(name)
    method = found if isinstance(found, Method) else found() if callable(found) else found
    if not isinstance(method, Method):
        raise ValueError(f"method {name!r}: gives a {type(method).__name__}, not an fmvae.methods.Method "  # noqa: TRY004 - config validation reports ValueErrors
                         "(or a function of no arguments that returns one)")
    problems = []
    if not callable(method.objective):
        problems.append("its objective must be the objective function itself")
    if method.schedule not in SCHEDULES:
        problems.append(f"schedule {method.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if method.model not in MODELS:
        problems.append(f"model {method.model!r} is not one of {', '.join(MODELS)}")
    if method.samples_from is not None and method.samples_from not in method.hyper:
        problems.append(f"samples_from {method.samples_from!r} is not one of its hyper-parameters {method.hyper}")
    if method.schedule == "lagging" and not {"T", "R"} <= set(method.hyper):
        problems.append("the lagging schedule needs the hyper-parameters T and R")
    if problems:
        raise ValueError(f"method {name!r}: " + "; ".join(problems))
    return dataclasses.replace(method, name=name, paper_name=method.paper_name or name)


def check_contract(name: str, hyper: dict) -> None:
    """Probe method ``name`` at one grid point ``hyper`` on a two-model stack (D = 2, K = 1, tiny
    networks; labelled data for M2): its objective must return finite (2, N) values that a
    gradient reaches. Raises ValueError naming the method and what failed."""
    import torch  # imported late: validation of built-in methods does not need it

    from fmvae.nn import BatchedVAE, Labels
    from fmvae.objectives.semi_supervised import pack
    from fmvae.train.loop import hyper_tensors

    method = get(name)
    m, n = 2, 7
    generator = torch.Generator().manual_seed(0)
    model = BatchedVAE(m, 2, 1, [8], 0.01, seeds=[1, 2], sigma2_init=torch.full((m, 1), 0.1), learn_sigma2=False,
                       labels=Labels(2) if method.semi_supervised else None)
    x = torch.randn(m, n, 2, generator=generator)
    if method.semi_supervised:
        x = pack(x, torch.randint(0, 2, (m, n), generator=generator), torch.arange(n).expand(m, -1) % 2 == 0)
    values = hyper_tensors(method, {k: [hyper[k]] * m for k in method.hyper}, m, "cpu")
    samples = method.samples({k: v[0].item() for k, v in values.items()})
    eps = torch.randn(m, n, samples, model.noise_dim, generator=generator)
    try:
        out = method.objective_fn(model, x, eps, values)
    except Exception as err:
        raise ValueError(f"method {name!r}: its objective fails on a 2-model probe batch (x {tuple(x.shape)}, "
                         f"eps {tuple(eps.shape)}): {type(err).__name__}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.shape != (m, n):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"method {name!r}: its objective returns {shape} on a 2-model probe batch of {n} points; "
                         f"it must return one value per model and point, shape ({m}, {n})")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"method {name!r}: its objective returns non-finite values on the probe batch")
    if not out.requires_grad:
        raise ValueError(f"method {name!r}: no gradient reaches the model's parameters from its objective")
