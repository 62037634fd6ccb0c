# The leaderboard: every configured method on the paper's pathologies (fmvae.report.leaderboard).


localrules:
    leaderboard,


rule leaderboard:
    input:
        [f for e in LEADERBOARD_EXPERIMENTS for f in evaluation_files(e)],
    output:
        csv="results/bench/leaderboard.csv",
        md="results/bench/leaderboard.md",
        png=report("results/bench/leaderboard.png", caption="../report/leaderboard.rst", category="Leaderboard"),
    log:
        "results/logs/leaderboard.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "fmvae leaderboard --evaluations {input} --out-csv {output.csv} --out-md {output.md} --out-png {output.png} "
        "--dpi {params.dpi} > {log} 2>&1"
