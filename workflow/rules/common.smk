# Helpers only: config validation, the config slices each job receives, and target lists.

import re
import shlex
import shutil

from fmvae import config as cfg
from fmvae.data import groundtruth

# Validate before any job starts; defaults from workflow/schemas/config.schema.yaml fill the rest.
try:
    _validated = cfg.validate_config(config)
except cfg.ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

if shutil.which("fmvae") is None:
    raise WorkflowError(
        "the 'fmvae' command is not on PATH: activate the project's environment "
        "(. .venv/bin/activate) or install it (pip install -c constraints.txt -e .)"
    )

# The software environment of every rule (for --sdm conda); relative to this rules folder.
ENV = "../../environment.yml"

# Resources live in the rules; the cluster profiles (workflow/profiles/) hold only executor settings
# and site knobs. Every rule submitted to a cluster names its `threads`, `runtime` (minutes), `mem_mb`
# and `gpu` (the sbatch line of workflow/profiles/slurm-generic uses all four); the localrules name
# only `mem_mb`: on a cluster they run in the Snakemake process, within its `resources: mem_mb`.
# The GPU switch (config cluster.gpu): one GPU per training job (fit_gt_encoder, train, adversarial)
# on a cluster, else CPU only; local runs ignore the gpu resource.
GPUS = 1 if config["cluster"]["gpu"] else 0

SYNTHETIC = cfg.synthetic_names(config)
REAL = cfg.real_names(config)
WITH_SURROGATE = [name for name in SYNTHETIC if groundtruth.get(name).surrogate]


wildcard_constraints:
    dataset="|".join(SYNTHETIC + REAL) or "none",
    version=r"\d+",
    split=r"\d+",


def as_arg(spec):
    """A config slice as one shell-quoted JSON argument (params compare it by value)."""
    return shlex.quote(cfg.to_json(spec))


def synthetic_data_files():
    return [f"results/data/{name}/v{version}.h5" for name in SYNTHETIC for version in range(cfg.synthetic_spec(config, name)["versions"])]


def real_data_files():
    return [f"results/data/{name}/split{split}.h5" for name in REAL for split in range(config["data"]["real"]["splits"])]


def surrogate_file(name):
    return f"results/surrogates/{name}.h5" if name in WITH_SURROGATE else []


def first_data_file(name):
    return f"results/data/{name}/v0.h5" if name in SYNTHETIC else f"results/data/{name}/split0.h5"


def data_figure_files():
    return [f"results/figures/data/{name}.png" for name in SYNTHETIC + REAL]


def paper_data_figure_files():
    numbers = [2, 3] + ([4] if {"figure8", "clusters"} <= set(SYNTHETIC) else [])
    return [f"results/figures/figure{n}.{ext}" for n in numbers for ext in ("png", "pdf")]


def figure_style():
    return as_arg(config["figures"])


# Training and evaluation targets ---------------------------------------------------------------

from fmvae import methods as registered_methods
from fmvae.report.tables import TABLES
from fmvae import plan
from fmvae.train.protocol import part_count

EXPERIMENTS = cfg.experiment_names(config)
# Built-in methods and those the config names (an outside method's import path holds "." and ":")
METHOD_NAMES = sorted(set(registered_methods.METHODS) | {m for e in EXPERIMENTS for m in config["experiments"][e]["methods"]})


wildcard_constraints:
    experiment="|".join(EXPERIMENTS) or "none",
    method="|".join(map(re.escape, METHOD_NAMES)),
    part=r"\d+",


# Which ready job starts first when the cores are busy: the costliest training, and the data chains
# in front of it (fmvae.plan.priorities).
PRIORITY = plan.priorities(config)


def dataset_priority(w):
    return PRIORITY["dataset"].get(w.dataset, 0)


def train_priority(w):
    return PRIORITY["train"].get((w.experiment, w.dataset, w.method), 0)


def experiment_jobs(experiment):
    """(dataset, version, method) of every evaluation of one experiment."""
    entry = config["experiments"][experiment]
    return [(d, v, m) for d in entry["datasets"] for v in range(cfg.experiment_versions(config, experiment, d)) for m in entry["methods"]]


def data_file(dataset, version):
    """The file an experiment trains on: a synthetic set's version, or a real set's split."""
    return f"results/data/{dataset}/split{version}.h5" if dataset in REAL else f"results/data/{dataset}/v{version}.h5"


def run_data_file(w):
    return data_file(w.dataset, w.version)


def run_files(w):
    spec = cfg.experiment_spec(config, w.experiment, w.dataset, w.method)
    return [f"results/runs/{w.experiment}/{w.dataset}/v{w.version}/{w.method}/part{p}.h5" for p in range(part_count(spec, int(w.version)))]


def needs_ground_truth(w):
    return cfg.experiment_spec(config, w.experiment, w.dataset, w.method)["restarts"]["ground_truth"] > 0


def gt_encoder_files():
    """Every φ_GT file the configured experiments use (their ground-truth restarts' encoders)."""
    return sorted(
        {
            f"results/gt_encoders/{d}/v{v}.h5"
            for e in EXPERIMENTS
            for d, v, m in experiment_jobs(e)
            if cfg.experiment_spec(config, e, d, m)["restarts"]["ground_truth"] > 0
        }
    )


def gt_gap_files():
    """The table of φ_GT's gaps to log p(x) (fmvae.report.gt_gaps), when some experiment uses φ_GT."""
    return [f"results/tables/gt_encoder_gaps.{ext}" for ext in ("csv", "md")] if gt_encoder_files() else []


def needs_true_conditionals(w):
    """A semi-supervised method on a synthetic set: its evaluation draws the true p(x|y) from θ_GT."""
    return registered_methods.get(w.method).semi_supervised and w.dataset in WITH_SURROGATE


def evaluation_files(experiment):
    return [f"results/evaluation/{experiment}/{d}/v{v}/{m}.h5" for d, v, m in experiment_jobs(experiment)]


def table_names():
    """Tables whose experiments are all configured."""
    return [name for name, rules in TABLES.items() if all(r.experiment in EXPERIMENTS for r in rules)]


def table_files():
    return [f"results/tables/{name}.{ext}" for name in table_names() + AUDIT_TABLES for ext in ("csv", "md")]


# Every restart of the selected grid points, and every model's checked invariants (fmvae.report.audit)
AUDIT_TABLES = ["restarts", "invariants"] if EXPERIMENTS else []


# Figures of trained models (version 0 of each data set) ----------------------------------------

from fmvae.report.model_figures import FIGURE5_ROWS, LATENT_GROWTH_EXPERIMENTS, LATENT_GROWTH_FIGURES, MODEL_FIGURES


def configured(experiment, dataset, method):
    entry = config["experiments"].get(experiment)
    return entry is not None and dataset in entry["datasets"] and method in entry["methods"]


def evaluation_file(experiment, dataset, method, version=0):
    return f"results/evaluation/{experiment}/{dataset}/v{version}/{method}.h5"


def figure5_datasets():
    return [d for d in FIGURE5_ROWS if any(configured("unsupervised", d, m) for m in ("vae", "iwae"))]


def model_figure_numbers():
    numbers = [n for n, key in MODEL_FIGURES.items() if configured(*key)]
    numbers += [5] if figure5_datasets() else []
    numbers += [1] if configured("linear", "linear_cholesky", "vae") else []
    numbers += [n for n, d in LATENT_GROWTH_FIGURES.items() if latent_growth_keys(d)]
    return sorted(numbers)


def latent_growth_keys(dataset):
    """Figures 23-24: the VAE evaluations of one 5-D set per K that are configured."""
    return [(e, dataset, "vae") for e in LATENT_GROWTH_EXPERIMENTS.values() if configured(e, dataset, "vae")]


def model_figure_inputs(w):
    """Evaluation, data and surrogate files of Figure 1, 5, 8-16 or 23-24 (the CLI recognises each by its attributes)."""
    number = int(w.number)
    if number == 1:
        keys, datasets = [("linear", "linear_cholesky", "vae")], ["linear_cholesky"]
    elif number in LATENT_GROWTH_FIGURES:
        datasets = [LATENT_GROWTH_FIGURES[number]]
        keys = latent_growth_keys(datasets[0])
    elif number == 5:
        datasets = figure5_datasets()
        keys = [("unsupervised", d, m) for d in datasets for m in ("vae", "iwae") if configured("unsupervised", d, m)]
    else:
        keys, datasets = [MODEL_FIGURES[number]], [MODEL_FIGURES[number][1]]
    return {
        "evaluations": [evaluation_file(*key) for key in keys],
        "data": [f"results/data/{d}/v0.h5" for d in datasets],
        "surrogates": [surrogate_file(d) for d in datasets if d in WITH_SURROGATE],
    }


def model_figure_files():
    return [f"results/figures/figure{n}.{ext}" for n in model_figure_numbers() for ext in ("png", "pdf")]


# Section 9 practitioner checks ------------------------------------------------------------------

from fmvae.checks import checks_spec


def checks_experiments():
    return [e for e in config["checks"]["experiments"] if e in EXPERIMENTS]


def checks_evaluation_files():
    return [f for e in checks_experiments() for f in evaluation_files(e)]


def checks_data_files():
    return list(dict.fromkeys(f"results/data/{d}/v{v}.h5" for e in checks_experiments() for d, v, _ in experiment_jobs(e)))


def checks_surrogate_files():
    return list(dict.fromkeys(surrogate_file(d) for e in checks_experiments() for d, _, _ in experiment_jobs(e) if d in WITH_SURROGATE))


def checks_files():
    return [f"results/tables/checks.{ext}" for ext in ("csv", "md")] if checks_evaluation_files() else []


# Appendix F: Figure 7 and its table (the config's adversarial section) ---------------------------

from fmvae.adversarial import adversarial_spec, adversarial_versions

ADVERSARIAL_DATASET = config["adversarial"]["dataset"]


def adversarial_files():
    """Per-version files of the adversarial rule (none when the data set is not configured)."""
    if ADVERSARIAL_DATASET not in SYNTHETIC:
        return []
    return [f"results/adversarial/{ADVERSARIAL_DATASET}/v{v}.h5" for v in range(adversarial_versions(config))]


def figure7_files():
    if not adversarial_files():
        return []
    return [f"results/figures/figure7.{ext}" for ext in ("png", "pdf")] + [f"results/tables/figure7.{ext}" for ext in ("csv", "md")]


# The leaderboard (fmvae.report.leaderboard): the experiments it ranks that are configured
from fmvae.report import leaderboard as leaderboard_report

LEADERBOARD_EXPERIMENTS = [e for e in leaderboard_report.EXPERIMENTS if e in EXPERIMENTS]


def leaderboard_files():
    return [f"results/bench/leaderboard.{ext}" for ext in ("csv", "md", "png")] if LEADERBOARD_EXPERIMENTS else []
