# Section 9, guideline 1 (docs/methods.md §5 item 1): the class-separability check of the semi-supervised
# sets, a small classifier for y|x on each set's observed training labels (fmvae.separability):
# version 0 of the two semi-circle sets and split 0 of the real sets, those configured. The file
# lists come from the library (tested there) so that this file holds rules only.

from functools import partial

from fmvae.separability import separability_spec, workflow_data_files, workflow_outputs

separability_data_files = partial(workflow_data_files, SYNTHETIC, REAL)
# Targets for rule all: the two tables, or [] when no semi-supervised set is configured.
separability_files = partial(workflow_outputs, SYNTHETIC, REAL)


rule separability:
    input:
        separability_data_files(),
    output:
        csv="results/tables/separability.csv",
        md="results/tables/separability.md",
    log:
        "results/logs/separability.log",
    benchmark:
        "results/benchmarks/separability.tsv"
    conda:
        ENV
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
        gpu=0,
    params:
        spec=as_arg(separability_spec(config)),
    shell:
        "fmvae --threads {threads} separability --spec {params.spec} --data {input} "
        "--out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
