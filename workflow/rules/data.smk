# Data: surrogate ground-truth decoders, simulation of the synthetic sets, and the real sets.


localrules:
    download_uci,


rule fit_surrogate:
    output:
        "results/surrogates/{dataset}.h5",
    params:
        spec=lambda w: as_arg(cfg.surrogate_spec(config, w.dataset)),
    conda:
        ENV
    log:
        "results/logs/fit_surrogate/{dataset}.log",
    benchmark:
        "results/benchmarks/fit_surrogate/{dataset}.tsv"
    threads: 2
    shell:
        "fmvae --threads {threads} fit-surrogate {wildcards.dataset} --spec {params.spec} --out {output} > {log} 2>&1"


rule simulate_dataset:
    input:
        surrogate=lambda w: surrogate_file(w.dataset),
    output:
        "results/data/{dataset}/v{version}.h5",
    params:
        spec=lambda w: as_arg(cfg.synthetic_spec(config, w.dataset)),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    threads: 1
    conda:
        ENV
    log:
        "results/logs/simulate_dataset/{dataset}/v{version}.log",
    shell:
        "fmvae --threads {threads} simulate {wildcards.dataset} {wildcards.version} --spec {params.spec} "
        "{params.surrogate} --out {output} > {log} 2>&1"


rule download_uci:
    output:
        "results/raw/{dataset}/{member}",
    params:
        spec=lambda w: as_arg(cfg.real_spec(config, w.dataset)),
    conda:
        ENV
    log:
        "results/logs/download_uci/{dataset}/{member}.log",
    shell:
        "fmvae download {wildcards.dataset} --spec {params.spec} --out {output} > {log} 2>&1"


rule prepare_uci:
    input:
        raw=lambda w: f"results/raw/{w.dataset}/{cfg.real_spec(config, w.dataset)['member']}",
    output:
        "results/data/{dataset}/split{split}.h5",
    params:
        spec=lambda w: as_arg(cfg.real_spec(config, w.dataset)),
    conda:
        ENV
    log:
        "results/logs/prepare_uci/{dataset}/split{split}.log",
    shell:
        "fmvae prepare {wildcards.dataset} {wildcards.split} --spec {params.spec} --raw {input.raw} "
        "--out {output} > {log} 2>&1"
