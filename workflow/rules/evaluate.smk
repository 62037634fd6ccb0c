# Evaluation: restart and hyper-parameter selection, test metrics; then the paper's tables.


localrules:
    table,
    audit,
    reproduction,


rule evaluate:
    input:
        data=run_data_file,
        runs=run_files,
        surrogate=lambda w: surrogate_file(w.dataset) if needs_true_conditionals(w) else [],
    output:
        "results/evaluation/{experiment}/{dataset}/v{version}/{method}.h5",
    log:
        "results/logs/evaluate/{experiment}/{dataset}/v{version}/{method}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{dataset}/v{version}/{method}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
        gpu=0,
    params:
        spec=lambda w: as_arg(cfg.evaluation_spec(config, w.experiment, w.dataset, w.method)),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    shell:
        "fmvae --threads {threads} evaluate --spec {params.spec} --data {input.data} --version {wildcards.version} "
        "--runs {input.runs} {params.surrogate} --out {output} > {log} 2>&1"


rule table:
    input:
        lambda w: list(dict.fromkeys(f for rule in TABLES[w.table] for f in evaluation_files(rule.experiment))),
    output:
        csv=report("results/tables/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/tables/{table}.md",
    log:
        "results/logs/table/{table}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        ENV
    resources:
        mem_mb=2000,
    shell:
        "fmvae table {wildcards.table} --evaluations {input} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule checks:
    input:
        evaluations=checks_evaluation_files(),
        data=checks_data_files(),
        surrogates=checks_surrogate_files(),
    output:
        csv="results/tables/checks.csv",
        md="results/tables/checks.md",
    log:
        "results/logs/checks/checks.log",
    benchmark:
        "results/benchmarks/checks/checks.tsv"
    conda:
        ENV
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
        gpu=0,
    params:
        spec=as_arg(checks_spec(config)),
    shell:
        "fmvae --threads {threads} check --spec {params.spec} --evaluations {input.evaluations} --data {input.data} "
        "--surrogate {input.surrogates} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule audit:
    input:
        [f for e in EXPERIMENTS for f in evaluation_files(e)],
    output:
        [f"results/tables/{name}.{ext}" for name in AUDIT_TABLES for ext in ("csv", "md")],
    log:
        "results/logs/audit.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    shell:
        "fmvae audit --evaluations {input} --out-dir results/tables > {log} 2>&1"


rule reproduction:
    input:
        [f"results/tables/{name}.csv" for name in table_names() + AUDIT_TABLES],
        [f for f in gt_gap_files() if f.endswith(".csv")],
    output:
        report("results/REPRODUCTION.md", caption="../report/reproduction.rst", category="Summary"),
    log:
        "results/logs/reproduction.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    shell:
        "fmvae reproduction --tables {input} --out {output} > {log} 2>&1"
