# Data: surrogate ground-truth decoders, simulation of the synthetic sets, and the real sets.


localrules:
    download_uci,


rule fit_surrogate:
    output:
        "results/surrogates/{dataset}.h5",
    log:
        "results/logs/fit_surrogate/{dataset}.log",
    benchmark:
        "results/benchmarks/fit_surrogate/{dataset}.tsv"
    priority: dataset_priority
    conda:
        ENV
    threads: 2
    resources:
        runtime=240,  # minutes; paper scale: up to 3 rounds of 40 000 Adam steps + L-BFGS
        mem_mb=4000,
        gpu=0,
    params:
        spec=lambda w: as_arg(cfg.surrogate_spec(config, w.dataset)),
    shell:
        "fmvae --threads {threads} fit-surrogate {wildcards.dataset} --spec {params.spec} --out {output} > {log} 2>&1"


rule simulate_dataset:
    input:
        surrogate=lambda w: surrogate_file(w.dataset),
    output:
        "results/data/{dataset}/v{version}.h5",
    log:
        "results/logs/simulate_dataset/{dataset}/v{version}.log",
    priority: dataset_priority
    conda:
        ENV
    threads: 1
    resources:
        runtime=5,  # seconds each (grouped by the cluster profiles)
        mem_mb=2000,
        gpu=0,
    params:
        spec=lambda w: as_arg(cfg.synthetic_spec(config, w.dataset)),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    shell:
        "fmvae --threads {threads} simulate {wildcards.dataset} {wildcards.version} --spec {params.spec} "
        "{params.surrogate} --out {output} > {log} 2>&1"


rule download_uci:
    output:
        "results/raw/{dataset}/{member}",
    log:
        "results/logs/download_uci/{dataset}/{member}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        spec=lambda w: as_arg(cfg.real_spec(config, w.dataset)),
    shell:
        "fmvae download {wildcards.dataset} --spec {params.spec} --out {output} > {log} 2>&1"


rule prepare_uci:
    input:
        raw=lambda w: f"results/raw/{w.dataset}/{cfg.real_spec(config, w.dataset)['member']}",
    output:
        "results/data/{dataset}/split{split}.h5",
    log:
        "results/logs/prepare_uci/{dataset}/split{split}.log",
    priority: dataset_priority
    conda:
        ENV
    threads: 1
    resources:
        runtime=5,
        mem_mb=2000,
        gpu=0,
    params:
        spec=lambda w: as_arg(cfg.real_spec(config, w.dataset)),
    shell:
        "fmvae prepare {wildcards.dataset} {wildcards.split} --spec {params.spec} --raw {input.raw} --out {output} > {log} 2>&1"
