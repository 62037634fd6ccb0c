# Figures that need only the data: one per data set, and the paper's Figures 2, 3 and 4; then the
# figures of trained models (1, 5, 8-16), drawn from the evaluation files of version 0.


localrules:
    plot_data,
    figure2,
    figure3,
    figure4,
    model_figure,


rule plot_data:
    input:
        data=lambda w: first_data_file(w.dataset),
        surrogate=lambda w: surrogate_file(w.dataset),
    output:
        report("results/figures/data/{dataset}.png", caption="../report/data.rst", category="Data sets"),
    log:
        "results/logs/plot_data/{dataset}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    shell:
        "fmvae plot-data {input.data} {params.surrogate} --style {params.style} --out {output} > {log} 2>&1"


rule figure2:
    output:
        png=report("results/figures/figure2.png", caption="../report/figure2.rst", category="Figures"),
        pdf="results/figures/figure2.pdf",
    log:
        "results/logs/figures/figure2.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
    shell:
        "fmvae plot-figure 2 --style {params.style} --out {output.png} {output.pdf} > {log} 2>&1"


rule figure3:
    output:
        png=report("results/figures/figure3.png", caption="../report/figure3.rst", category="Figures"),
        pdf="results/figures/figure3.pdf",
    log:
        "results/logs/figures/figure3.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
    shell:
        "fmvae plot-figure 3 --style {params.style} --out {output.png} {output.pdf} > {log} 2>&1"


rule figure4:
    input:
        data=["results/data/figure8/v0.h5", "results/data/clusters/v0.h5"],
        surrogates=["results/surrogates/figure8.h5", "results/surrogates/clusters.h5"],
    output:
        png=report("results/figures/figure4.png", caption="../report/figure4.rst", category="Figures"),
        pdf="results/figures/figure4.pdf",
    log:
        "results/logs/figures/figure4.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
    shell:
        "fmvae plot-figure 4 --data {input.data} --surrogate {input.surrogates} --style {params.style} "
        "--out {output.png} {output.pdf} > {log} 2>&1"


rule model_figure:
    input:
        unpack(model_figure_inputs),
    output:
        png=report("results/figures/figure{number}.png", caption="../report/figure.rst", category="Figures"),
        pdf="results/figures/figure{number}.pdf",
    log:
        "results/logs/figures/figure{number}.log",
    wildcard_constraints:
        number="|".join(str(n) for n in [1, 5, *MODEL_FIGURES, *LATENT_GROWTH_FIGURES]),
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
