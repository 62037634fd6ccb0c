# The figures of the semi-supervised M2 models (6, 17-22), drawn from the evaluation files of
# version 0 of the semi_synthetic experiment: each figure with at least one configured evaluation.
# The file lists come from the library (fmvae.report.semi_figures, tested there) with the path
# helpers of common.smk, so that this file holds rules only.

from functools import partial

from fmvae.report.semi_figures import SEMI_FIGURE_NUMBERS, workflow_inputs, workflow_outputs

semi_figure_inputs = partial(workflow_inputs, configured, evaluation_file, data_file, surrogate_file)
# Targets for rule all: results/figures/figure{6,17-22}.{png,pdf} of the configured evaluations.
semi_figure_files = partial(workflow_outputs, configured)


localrules:
    semi_figure,


rule semi_figure:
    input:
        unpack(semi_figure_inputs),
    output:
        png=report("results/figures/figure{number}.png", caption="../report/semi_figure.rst", category="Figures"),
        pdf="results/figures/figure{number}.pdf",
    log:
        "results/logs/semi_figures/figure{number}.log",
    wildcard_constraints:
        number="|".join(str(n) for n in SEMI_FIGURE_NUMBERS),
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
        surrogate=lambda w, input: f"--surrogate {' '.join(input.surrogates)}" if input.surrogates else "",
    shell:
        "fmvae --threads 1 plot-model-figure {wildcards.number} --evaluations {input.evaluations} "
        "--data {input.data} {params.surrogate} --style {params.style} --out {output.png} {output.pdf} > {log} 2>&1"
