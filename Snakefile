# Reproduction workflow for "Failure Modes of Variational Autoencoders and Their Effects on
# Downstream Tasks" (Yacoby, Pan & Doshi-Velez). Run `snakemake --cores all` (default, laptop
# scale), `--configfile config/smoke.yaml` (tiny) or `--configfile config/paper.yaml` (full).
# Rules are thin: each calls the `fmvae` command-line interface; all computation is in src/fmvae.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/semi_figures.smk"
include: "workflow/rules/adversarial.smk"
include: "workflow/rules/separability.smk"
include: "workflow/rules/bench.smk"


# The image of every job under --sdm apptainer (config key `container`, validated in common.smk).
container: config["container"]


rule all:
    default_target: True
    input:
        synthetic_data_files(),
        real_data_files(),
        data_figure_files(),
        paper_data_figure_files(),
        table_files(),
        gt_gap_files(),
        model_figure_files(),
        semi_figure_files(),
        checks_files(),
        figure7_files(),
        separability_files(),
        leaderboard_files(),
        "results/REPRODUCTION.md",
