# Appendix F (Figure 7): per version, a learned classifier, an attack that crosses its boundary but
# not the true one, and the projections of a well-specified and a mismatched VAE; then Figure 7
# (version 0) and its table (mean ± std over versions).


localrules:
    figure7,
    figure7_table,


rule adversarial:
    input:
        data="results/data/{dataset}/v{version}.h5",
        surrogate=lambda w: surrogate_file(w.dataset),
    output:
        "results/adversarial/{dataset}/v{version}.h5",
    log:
        "results/logs/adversarial/{dataset}/v{version}.log",
    benchmark:
        "results/benchmarks/adversarial/{dataset}/v{version}.tsv"
    wildcard_constraints:
        dataset=ADVERSARIAL_DATASET,
    conda:
        ENV
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
        gpu=GPUS,
    params:
        spec=as_arg(adversarial_spec(config)),
    shell:
        "fmvae --threads {threads} adversarial {wildcards.version} --spec {params.spec} --data {input.data} "
        "--surrogate {input.surrogate} --out {output} > {log} 2>&1"


rule figure7:
    input:
        f"results/adversarial/{ADVERSARIAL_DATASET}/v0.h5",
    output:
        png=report("results/figures/figure7.png", caption="../report/figure7.rst", category="Figures"),
        pdf="results/figures/figure7.pdf",
    log:
        "results/logs/figures/figure7.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        style=figure_style(),
    shell:
        "fmvae --threads 1 figure7 --results {input} --style {params.style} --out {output.png} {output.pdf} > {log} 2>&1"


rule figure7_table:
    input:
        adversarial_files(),
    output:
        csv=report("results/tables/figure7.csv", caption="../report/figure7_table.rst", category="Tables"),
        md="results/tables/figure7.md",
    log:
        "results/logs/table/figure7.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    shell:
        "fmvae figure7 --results {input} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
