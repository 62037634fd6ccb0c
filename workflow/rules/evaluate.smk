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
    params:
        spec=lambda w: as_arg(cfg.evaluation_spec(config, w.experiment, w.dataset, w.method)),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    threads: 1
    conda:
        ENV
    log:
        "results/logs/evaluate/{experiment}/{dataset}/v{version}/{method}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{dataset}/v{version}/{method}.tsv"
    shell:
        "fmvae --threads {threads} evaluate --spec {params.spec} --data {input.data} --version {wildcards.version} "
        "--runs {input.runs} {params.surrogate} --out {output} > {log} 2>&1"


rule table:
    input:
        lambda w: list(dict.fromkeys(f for rule in TABLES[w.table] for f in evaluation_files(rule.experiment))),
    output:
        csv=report("results/tables/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/tables/{table}.md",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        ENV
    log:
        "results/logs/table/{table}.log",
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
    params:
        spec=as_arg(checks_spec(config)),
    threads: 1
    conda:
        ENV
    log:
        "results/logs/checks/checks.log",
    benchmark:
        "results/benchmarks/checks/checks.tsv"
    shell:
        "fmvae --threads {threads} check --spec {params.spec} --evaluations {input.evaluations} --data {input.data} "
        "--surrogate {input.surrogates} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule audit:
    input:
        [f for e in EXPERIMENTS for f in evaluation_files(e)],
    output:
        [f"results/tables/{name}.{ext}" for name in AUDIT_TABLES for ext in ("csv", "md")],
    conda:
        ENV
    log:
        "results/logs/audit.log",
    shell:
        "fmvae audit --evaluations {input} --out-dir results/tables > {log} 2>&1"


rule reproduction:
    input:
        [f"results/tables/{name}.csv" for name in table_names() + AUDIT_TABLES],
        [f for f in gt_gap_files() if f.endswith(".csv")],
    output:
        report("results/REPRODUCTION.md", caption="../report/reproduction.rst", category="Summary"),
    conda:
        ENV
    log:
        "results/logs/reproduction.log",
    shell:
        "fmvae reproduction --tables {input} --out {output} > {log} 2>&1"
