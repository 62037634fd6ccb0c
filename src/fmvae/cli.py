"""Command-line interface: ``fmvae <command>``. Every workflow rule calls one of these commands, and
each works on its own (without Snakemake) from a config file.

Each command takes either ``--config FILE`` (a YAML config, validated, from which the command takes
its slice) or ``--spec JSON`` (the slice itself, as the workflow passes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from fmvae import config as cfg
from fmvae import runtime

log = logging.getLogger("fmvae")


def _spec(args, slicer) -> dict:
    if args.spec:
        return json.loads(args.spec)
    if args.config:
        return slicer(cfg.load_config(args.config), args.dataset)
    raise SystemExit("give --config FILE or --spec JSON")


def _add_source(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", nargs="+", help="YAML config file(s), later ones override earlier ones")
    group.add_argument("--spec", help="the command's config slice as JSON (what the workflow passes)")


def cmd_validate(args) -> None:
    config = cfg.load_config(args.config)
    print(f"{', '.join(args.config)}: valid ({len(cfg.synthetic_names(config))} synthetic and "
          f"{len(cfg.real_names(config))} real data sets)")
    if args.show:
        print(json.dumps(config, indent=2))


def cmd_fit_surrogate(args) -> None:
    from fmvae.data import groundtruth
    from fmvae.data.simulate import save_surrogate
    from fmvae.data.surrogate import fit_surrogate

    spec = _spec(args, cfg.surrogate_spec)
    gt = groundtruth.get(spec["dataset"])
    seed = cfg.derive_seed(spec["seed"], spec["dataset"], "surrogate")
    fit = fit_surrogate(gt, spec["params"], spec["fit"], seed)
    log.info("%s: surrogate MSE %.3g (target %g) after %d round(s), %d Adam steps, %.1f s",
             gt.name, fit.mse, spec["fit"]["mse_target"], fit.rounds, fit.steps, fit.seconds)
    save_surrogate(args.out, gt, fit.model, {
        "mse": fit.mse, "mse_target": spec["fit"]["mse_target"], "mse_target_met": fit.mse < spec["fit"]["mse_target"],
        "restart_mse": fit.restart_mse,
        "rounds": fit.rounds, "adam_steps": fit.steps, "seed": seed, "config": cfg.to_json(spec)})


def cmd_simulate(args) -> None:
    from fmvae.data.simulate import write_synthetic

    spec = _spec(args, cfg.synthetic_spec)
    write_synthetic(args.out, spec, args.version, args.surrogate)
    log.info("%s v%d: wrote %s", spec["dataset"], args.version, args.out)


def cmd_download(args) -> None:
    from fmvae.data.uci import fetch

    fetch(_spec(args, cfg.real_spec), args.out)


def cmd_prepare(args) -> None:
    from fmvae.data.uci import write_real

    spec = _spec(args, cfg.real_spec)
    write_real(args.out, spec, args.raw, args.split)
    log.info("%s split %d: wrote %s", spec["dataset"], args.split, args.out)


def cmd_plot_data(args) -> None:
    from fmvae.report import data_figures

    data_figures.plot_dataset(args.data, args.out, json.loads(args.style), surrogate_path=args.surrogate)


def cmd_plot_figure(args) -> None:
    from fmvae.report import data_figures

    data_figures.PAPER_FIGURES[args.number](args.out, json.loads(args.style), data=args.data or [],
                                            surrogates=args.surrogate or [])


def _run_spec(args, slicer) -> dict:
    """The slice from --spec, or from --config with --experiment/--dataset/--method."""
    if args.spec:
        return json.loads(args.spec)
    missing = [k for k in ("experiment", "dataset", "method") if not getattr(args, k)]
    if missing:
        raise SystemExit(f"with --config, also give --{' --'.join(missing)}")
    return slicer(cfg.load_config(args.config), args.experiment, args.dataset, args.method)


def _add_run_source(p: argparse.ArgumentParser) -> None:
    _add_source(p)
    for key in ("experiment", "dataset", "method"):
        p.add_argument(f"--{key}", help=f"with --config: the {key}")


def cmd_fit_gt_encoder(args) -> None:
    from fmvae.train.protocol import fit_gt_encoder

    spec = _spec(args, lambda config, name: cfg.gt_encoder_spec(config, name))
    fit_gt_encoder(spec, args.data, args.version, args.surrogate, args.out)


def cmd_gt_gap_table(args) -> None:
    from fmvae.report.gt_gaps import write_gap_table

    write_gap_table(args.gt_encoders, args.out_csv, args.out_md)


def cmd_train(args) -> None:
    from fmvae.train.protocol import train_part

    train_part(_run_spec(args, cfg.experiment_spec), args.data, args.version, args.part, args.out,
               surrogate_path=args.surrogate, gt_encoder_path=args.gt_encoder)


def cmd_evaluate(args) -> None:
    from fmvae.evaluation import evaluate

    evaluate(_run_spec(args, cfg.evaluation_spec), args.data, args.version, args.runs, args.out,
             surrogate_path=args.surrogate)


def cmd_table(args) -> None:
    from fmvae.report import tables

    tables.write_table(args.name, args.evaluations, args.out_csv, args.out_md)


def cmd_audit(args) -> None:
    from fmvae.report.audit import write_audit

    write_audit(args.evaluations, args.out_dir)


def cmd_leaderboard(args) -> None:
    from fmvae.report import leaderboard

    cells = leaderboard.write_leaderboard(args.evaluations, args.out_csv, args.out_md, args.out_png, args.dpi)
    log.info("leaderboard: %d methods (%s)", len(cells), ", ".join(cells))


def cmd_bench(args) -> None:
    from pathlib import Path

    from fmvae import bench

    rows = bench.run(args.method, json.loads(args.grid), args.configfile, args.cores, Path(args.directory))
    print(bench.format_standing(args.method, rows))
    print(f"leaderboard: {Path(args.directory) / bench.TARGETS[0]}")


def cmd_check(args) -> None:
    from fmvae import checks

    if args.spec:
        settings = json.loads(args.spec)
    else:
        settings = checks.checks_spec(cfg.load_config(args.config) if args.config else cfg.validate_config({}))
    rows = checks.write_checks(args.evaluations, args.data, settings, args.out_csv, args.out_md, args.surrogate or [])
    if args.out_csv is None and args.out_md is None:
        print(checks.markdown(rows, settings), end="")


def cmd_separability(args) -> None:
    from fmvae import separability

    try:
        if args.spec:
            settings = separability.settings_from(json.loads(args.spec))
        else:
            settings = separability.separability_spec(cfg.load_config(args.config) if args.config else {})
        rows = separability.check_files(args.data or [], args.csv or [], settings, args.label_column)
        separability.write(rows, settings, args.out_csv, args.out_md)
    except (separability.SeparabilityError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.out_csv is None and args.out_md is None:
        print(separability.markdown(rows, settings), end="")


def cmd_diagnose(args) -> None:
    from pathlib import Path

    from fmvae import diagnose

    overrides = {"latent_dim": args.latent_dim, "restarts": args.restarts, "epochs": args.epochs, "hidden": args.hidden,
                 "batch_size": args.batch_size, "lr": args.lr, "iwae_samples": args.iwae_samples, "sigma2": args.sigma2,
                 "sigma2_init": args.sigma2_init, "seed": args.seed, "log_every_epochs": args.log_every_epochs}
    try:
        result = diagnose.diagnose(args.csv, args.label_column, overrides)
    except diagnose.DiagnoseError as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.out or f"diagnose-{Path(args.csv).stem}")
    paths = diagnose.write_report(result, out)
    verdict = "WARNING: " + "; ".join(w["message"] for w in result["warnings"]) if result["warning"] else "no warning"
    print(f"{args.csv}: {verdict}\nreports: {paths['html']}, {paths['markdown']}")


def cmd_plot_model_figure(args) -> None:
    from fmvae.report import model_figures, semi_figures

    plot = semi_figures.plot_semi_figure if args.number in semi_figures.SEMI_FIGURE_NUMBERS else model_figures.plot_model_figure
    plot(args.number, args.out, args.evaluations, args.data, args.surrogate or [], json.loads(args.style))


def cmd_config_reference(args) -> None:
    from fmvae import config_reference

    schema = cfg.load_schema()
    if args.write:
        changed = config_reference.write(args.write, schema)
        print(f"{args.write}: {'updated' if changed else 'already up to date'}")
    else:
        print(config_reference.render(schema), end="")


def cmd_plan(args) -> None:
    from pathlib import Path

    from fmvae import plan

    text = plan.report(args.config, Path(args.snakefile), {"one CPU": args.benchmark, "GPU profile": args.gpu_benchmark},
                       args.lin_factor or plan.LIN_FACTOR, dag=not args.no_dag)
    print(text, end="")


def cmd_reproduction(args) -> None:
    from fmvae.report.reproduction import write_reproduction

    write_reproduction(args.tables, args.out)


def cmd_adversarial(args) -> None:
    from fmvae.adversarial import adversarial_spec, run_version

    spec = json.loads(args.spec) if args.spec else adversarial_spec(cfg.load_config(args.config))
    run_version(spec, args.data, args.surrogate, args.version, args.out)


def cmd_figure7(args) -> None:
    from fmvae.report import adversarial_figure

    if not (args.out or args.out_csv or args.out_md):
        raise SystemExit("give --out (figure) and/or --out-csv and --out-md (table)")
    if args.out:
        adversarial_figure.figure7(args.results[0], args.out, json.loads(args.style))
    if args.out_csv or args.out_md:
        if not (args.out_csv and args.out_md):
            raise SystemExit("the table needs both --out-csv and --out-md")
        adversarial_figure.write_table(args.results, args.out_csv, args.out_md)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmvae", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="validate config file(s) and report problems")
    p.add_argument("config", nargs="+")
    p.add_argument("--show", action="store_true", help="print the config with defaults filled in")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("config-reference", help="every config key with its type, default and description (Markdown)")
    p.add_argument("--write", metavar="FILE", help="rewrite the generated section of FILE (config/README.md) instead of printing")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("plan", help="compute plan: jobs per rule, models, optimiser steps, time estimates")
    p.add_argument("config", nargs="+", help="config file(s), e.g. config/paper.yaml")
    p.add_argument("--benchmark", default="results/benchmarks/throughput.json",
                   help="CPU throughput JSON of benchmarks/throughput.py")
    p.add_argument("--gpu-benchmark", help="the same, measured with --device cuda on the cluster's GPU")
    p.add_argument("--lin-factor", type=float, help="cost of a LIN step in VAE steps (default: see fmvae.plan)")
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--no-dag", action="store_true", help="skip the Snakemake dry run (jobs per rule)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("reproduction", help="REPRODUCTION.md: each claim, our numbers beside the paper's, holds or not")
    p.add_argument("--tables", nargs="*", default=[], help="result tables (results/tables/<name>.csv)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_reproduction)

    p = sub.add_parser("fit-surrogate", help="fit the surrogate ground-truth decoder of a synthetic set")
    p.add_argument("dataset")
    _add_source(p)
    p.add_argument("--out", required=True, help="HDF5 file to write")
    p.set_defaults(func=cmd_fit_surrogate)

    p = sub.add_parser("simulate", help="simulate one version of a synthetic set")
    p.add_argument("dataset")
    p.add_argument("version", type=int)
    _add_source(p)
    p.add_argument("--surrogate", help="surrogate HDF5 (required for sets generated from one)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("download", help="download, extract and verify a real data file")
    p.add_argument("dataset")
    _add_source(p)
    p.add_argument("--out", required=True, help="where the verified data file goes")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("prepare", help="split and standardise a real data set")
    p.add_argument("dataset")
    p.add_argument("split", type=int)
    _add_source(p)
    p.add_argument("--raw", required=True, help="the verified data file from 'download'")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("plot-data", help="figure of one data set (true density, f(z) coloured by z)")
    p.add_argument("data", help="a data file (v0.h5 or split0.h5)")
    p.add_argument("--surrogate", help="surrogate HDF5 of the set, if it has one")
    p.add_argument("--style", default="{}", help="the config's 'figures' section as JSON")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_plot_data)

    p = sub.add_parser("plot-figure", help="one of the paper's data-only figures (2, 3 or 4)")
    p.add_argument("number", type=int, choices=[2, 3, 4])
    p.add_argument("--data", nargs="*", help="data files the figure needs (Figure 4: figure8 and clusters v0)")
    p.add_argument("--surrogate", nargs="*", help="their surrogate files, in the same order")
    p.add_argument("--style", default="{}", help="the config's 'figures' section as JSON")
    p.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    p.set_defaults(func=cmd_plot_figure)

    p = sub.add_parser("plot-model-figure", help="one of the paper's figures of trained models (1, 5, 8-16, 23, 24; "
                                                 "the semi-supervised M2 models' 6, 17-22)")
    p.add_argument("number", type=int, choices=[1, 5, 6, *range(8, 25)])
    p.add_argument("--evaluations", nargs="+", required=True,
                   help="evaluation files; each is recognised by its experiment, data set and method")
    p.add_argument("--data", nargs="+", required=True, help="data files (v0.h5) of those data sets")
    p.add_argument("--surrogate", nargs="*", help="their surrogate files (recognised by data set)")
    p.add_argument("--style", default="{}", help="the config's 'figures' section as JSON")
    p.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    p.set_defaults(func=cmd_plot_model_figure)

    p = sub.add_parser("adversarial", help="Appendix F: classifier, attack and the two VAEs' projections (one version)")
    p.add_argument("version", type=int)
    _add_source(p)
    p.add_argument("--data", required=True, help="the data file of that version")
    p.add_argument("--surrogate", required=True, help="the data set's surrogate HDF5 (θ_GT)")
    p.add_argument("--out", required=True, help="HDF5 file to write")
    p.set_defaults(func=cmd_adversarial)

    p = sub.add_parser("figure7", help="Figure 7 and/or its table from the files of 'adversarial'")
    p.add_argument("--results", nargs="+", required=True, help="files of 'adversarial' (the figure draws the first)")
    p.add_argument("--style", default="{}", help="the config's 'figures' section as JSON")
    p.add_argument("--out", nargs="*", help="figure files (.png, .pdf)")
    p.add_argument("--out-csv", help="table CSV (mean ± std over the files)")
    p.add_argument("--out-md", help="table Markdown")
    p.set_defaults(func=cmd_figure7)

    p = sub.add_parser("fit-gt-encoder", help="fit φ_GT: encoders trained with the decoder frozen at θ_GT")
    p.add_argument("dataset")
    p.add_argument("version", type=int)
    _add_source(p)
    p.add_argument("--data", required=True)
    p.add_argument("--surrogate", help="surrogate HDF5 (not needed for eq. 6)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_fit_gt_encoder)

    p = sub.add_parser("gt-gap-table", help="table of φ_GT's gap log p(x) − ELBO per data set and version")
    p.add_argument("--gt-encoders", nargs="*", default=[], help="φ_GT files of 'fit-gt-encoder'")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=cmd_gt_gap_table)

    p = sub.add_parser("train", help="train one part of an (experiment, data set, version, method) as one batch")
    _add_run_source(p)
    p.add_argument("--data", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--surrogate", help="surrogate HDF5 (ground-truth restarts)")
    p.add_argument("--gt-encoder", help="φ_GT HDF5 (ground-truth restarts)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="select the restart and grid point, evaluate on the test split")
    _add_run_source(p)
    p.add_argument("--data", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--runs", nargs="+", required=True, help="every training part of this method")
    p.add_argument("--surrogate", help="surrogate HDF5 (θ_GT: the true p(x|y) of a semi-supervised synthetic set)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("table", help="aggregate evaluation files into one of the paper's tables")
    p.add_argument("name", help="table2, sec8 or sec5")
    p.add_argument("--evaluations", nargs="*", default=[])
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("audit", help="per-restart and invariant tables of evaluation files (restarts.*, invariants.*)")
    p.add_argument("--evaluations", nargs="*", default=[])
    p.add_argument("--out-dir", required=True, help="folder of restarts.{csv,md} and invariants.{csv,md}")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("leaderboard", help="every method on the paper's pathologies: results/bench/leaderboard.*")
    p.add_argument("--evaluations", nargs="*", default=[], help="evaluation files (those of other experiments are ignored)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-png", required=True)
    p.add_argument("--dpi", type=int, default=150)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("bench", help="add one method to the leaderboard's experiments, run them, print where it stands",
                       description="Adds METHOD (built in, an entry point of fmvae.methods, or package.module:attribute) "
                                   "with its grid to every leaderboard experiment of the configuration whose model it "
                                   "fits, runs Snakemake for results/bench/leaderboard.{md,csv,png} (training only what "
                                   "is missing) and prints the method's rank in each column. The scale is the "
                                   "configuration's: --configfile config/smoke.yaml takes minutes.")
    p.add_argument("--method", required=True, help="the method's name, e.g. fmvae_dreg:make_method")
    p.add_argument("--grid", default="{}", help='its hyper-parameter grid as JSON, e.g. \'{"S": [20]}\' (default: none)')
    p.add_argument("--configfile", nargs="*", default=[], help="config files on top of config/config.yaml, e.g. config/smoke.yaml")
    p.add_argument("--cores", default="all", help="Snakemake's --cores (default: all)")
    p.add_argument("--directory", default=".", help="the workflow's folder (default: the current one)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check", help="Section 9 practitioner checks: residual normality and the VAE-vs-IWAE gap")
    p.add_argument("--evaluations", nargs="+", required=True, help="evaluation files (each model is checked; "
                   "methods are compared with the config's checks.gap_reference of the same data set and version)")
    p.add_argument("--data", nargs="+", required=True, help="the data files of those data sets and versions")
    p.add_argument("--surrogate", nargs="*", help="surrogate files: adds a ground-truth control row per data set")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config", nargs="+", help="YAML config file(s) for the 'checks' settings (default: defaults)")
    group.add_argument("--spec", help="the checks settings as JSON (what the workflow passes)")
    p.add_argument("--out-csv", help="per-version CSV to write")
    p.add_argument("--out-md", help="Markdown summary to write (without either output, it is printed)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("separability", help="Section 9 check: can a small classifier tell the classes apart (y|x)?")
    p.add_argument("--data", nargs="+", help="data files (v<k>.h5, split<k>.h5): their observed training labels")
    p.add_argument("--csv", nargs="+", help="a user's labelled CSV file(s): header row, rows with an empty label ignored")
    p.add_argument("--label-column", help="the CSV files' label column (default: the last column)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config", nargs="+", help="YAML config file(s) for the 'separability' settings (default: defaults)")
    group.add_argument("--spec", help="the separability settings as JSON (what the workflow passes; missing keys: defaults)")
    p.add_argument("--out-csv", help="CSV to write (one row per input)")
    p.add_argument("--out-md", help="Markdown table to write (without either output, it is printed)")
    p.set_defaults(func=cmd_separability)

    from fmvae.diagnose import DEFAULTS as d

    p = sub.add_parser("diagnose", help="Section 9 checks on your own CSV: train MFG-VAEs and IWAEs, test residual "
                                        "normality, the IWAE-over-VAE gap and (with labels) class separability",
                       description="Train a few MFG-VAEs and IWAEs (random restarts, one stack each; the best by "
                                   "validation bound is kept) on a CSV of numeric features, standardised with the data's "
                                   "own mean and standard deviation and split by a seeded permutation into "
                                   f"{d['train_fraction']:.0%} training, {d['val_fraction']:.0%} validation and the rest "
                                   "test rows, then run the paper's Section 9 checks on the test rows and write "
                                   "report.html (self-contained), report.md, result.json and the figures. "
                                   "The defaults take a few minutes for 2 000 rows of 2 columns on one CPU thread "
                                   "(use --threads 1).")
    p.add_argument("csv", help="CSV file: a header row, then one row per point; every column except the label column "
                               "must be numeric, complete and not constant")
    p.add_argument("--label-column", help="a column of class labels (text or numbers; an empty cell: unlabelled row): "
                                          "adds the class-separability check (guideline 1)")
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"], help="K, the latent dimension (default %(default)s)")
    p.add_argument("--out", help="folder for the reports (default: diagnose-<csv stem>/)")
    p.add_argument("--restarts", type=int, default=d["restarts"], help="random restarts per family (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs (default %(default)s)")
    p.add_argument("--hidden", type=int, nargs="+", default=d["hidden"],
                   help="hidden layer widths of encoder and decoder (default %(default)s, the paper's)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="mini-batch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (default %(default)s)")
    p.add_argument("--iwae-samples", type=int, default=d["iwae_samples"], help="IWAE importance samples S (default %(default)s)")
    p.add_argument("--sigma2", type=float, help="fix the observation noise variance σ² (standardised units) instead of "
                                                "learning it per feature (the default)")
    p.add_argument("--sigma2-init", type=float, default=d["sigma2_init"],
                   help="initial σ² when it is learned (standardised units; default %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the split, the restarts and the checks (default %(default)s)")
    p.add_argument("--log-every-epochs", type=int, default=d["log_every_epochs"],
                   help="a progress line every N epochs (0: none; default %(default)s)")
    p.set_defaults(func=cmd_diagnose)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.keep_freed_memory()
    runtime.flush_denormals()  # before torch starts its threads, which copy the setting
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        args.func(args)
    except cfg.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a clear message for the known failure kinds, a traceback otherwise
        from fmvae.data.surrogate import SurrogateNotConverged
        from fmvae.data.uci import DataSourceError

        if isinstance(err, (DataSourceError, SurrogateNotConverged)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise
    log.info("%s done in %.1f s", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
