# Training: φ_GT for ground-truth initialisation, then every (experiment, data set, version, method)
# in parts of training.models_per_job models, each part one batched computation.


localrules:
    gt_encoder_gaps,


rule fit_gt_encoder:
    input:
        data="results/data/{dataset}/v{version}.h5",
        surrogate=lambda w: surrogate_file(w.dataset),
    output:
        "results/gt_encoders/{dataset}/v{version}.h5",
    log:
        "results/logs/fit_gt_encoder/{dataset}/v{version}.log",
    benchmark:
        "results/benchmarks/fit_gt_encoder/{dataset}/v{version}.tsv"
    priority: dataset_priority
    conda:
        ENV
    threads: 1
    resources:
        runtime=30,  # φ_GT: 10 encoders at once, seconds to a minute
        mem_mb=4000,
        gpu=GPUS,
    params:
        spec=lambda w: as_arg(cfg.gt_encoder_spec(config, w.dataset)),
        surrogate=lambda w, input: f"--surrogate {input.surrogate}" if input.surrogate else "",
    shell:
        "fmvae --threads {threads} fit-gt-encoder {wildcards.dataset} {wildcards.version} --spec {params.spec} "
        "--data {input.data} {params.surrogate} --out {output} > {log} 2>&1"


rule gt_encoder_gaps:
    input:
        gt_encoder_files(),
    output:
        csv="results/tables/gt_encoder_gaps.csv",
        md="results/tables/gt_encoder_gaps.md",
    log:
        "results/logs/gt_encoder_gaps.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    shell:
        "fmvae gt-gap-table --gt-encoders {input} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule train:
    input:
        data=run_data_file,
        surrogate=lambda w: surrogate_file(w.dataset) if needs_ground_truth(w) else [],
        gt_encoder=lambda w: f"results/gt_encoders/{w.dataset}/v{w.version}.h5" if needs_ground_truth(w) else [],
    output:
        "results/runs/{experiment}/{dataset}/v{version}/{method}/part{part}.h5",
    log:
        "results/logs/train/{experiment}/{dataset}/v{version}/{method}/part{part}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{dataset}/v{version}/{method}/part{part}.tsv"
    priority: train_priority
    conda:
        ENV
    threads: 1
    resources:
        runtime=60,  # a whole grid of one (experiment, data set, version, method), batched
        mem_mb=4000,
        gpu=GPUS,
    params:
        spec=lambda w: as_arg(cfg.experiment_spec(config, w.experiment, w.dataset, w.method)),
        init=lambda w, input: (f"--surrogate {input.surrogate} " if input.surrogate else "")
        + (f"--gt-encoder {input.gt_encoder}" if input.gt_encoder else ""),
    shell:
        "fmvae --threads {threads} train --spec {params.spec} --data {input.data} --version {wildcards.version} "
        "--part {wildcards.part} {params.init} --out {output} > {log} 2>&1"
