"""Partial reruns after edits, and the report. After a complete smoke run, a dry run with one config value changed
lists exactly the jobs downstream of that value (Snakemake's params trigger: every rule passes the
slice of the config it depends on as a parameter)."""

import re

import pytest
import yaml

from conftest import snakemake

pytestmark = pytest.mark.workflow

FIGURE_RULES = {"plot_data", "figure2", "figure3", "figure4", "model_figure", "semi_figure", "figure7", "leaderboard", "all"}


def planned_jobs(smoke_run, tmp_path, override: dict) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run with ``override`` on top of the smoke config lists."""
    assert smoke_run.result.returncode == 0, smoke_run.result.stderr[-3000:]
    edit = tmp_path / "edit.yaml"
    edit.write_text(yaml.safe_dump(override))
    result = snakemake(smoke_run.work, "-n", "--configfile", "config/smoke.yaml", "local.yaml", str(edit))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, text = [], result.stdout + result.stderr
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        match = re.match(r"(?:local)?rule (\w+):", block.strip())
        if match:
            found = re.search(r"wildcards: (.*)", block)
            wildcards = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
            jobs.append((match.group(1), wildcards))
    return jobs


def test_a_plotting_option_reruns_only_the_figures(smoke_run, tmp_path):
    jobs = planned_jobs(smoke_run, tmp_path, {"figures": {"dpi": 80}})
    rules = {rule for rule, _ in jobs}
    assert {"plot_data", "model_figure", "semi_figure"} <= rules <= FIGURE_RULES


def test_an_m2_hyper_parameter_reruns_that_method_its_tables_and_its_figures(smoke_run, tmp_path):
    methods = {"m2_vae": {"alpha": [0, 1], "gamma": [1]}, "m2_iwae": {"S": [3], "alpha": [1], "gamma": [2]},
               "m2_lin": {"T": [0.1], "R": [2], "alpha": [1], "gamma": [1]}}
    jobs = planned_jobs(smoke_run, tmp_path, {"experiments": {"semi_synthetic": {"methods": methods}}})
    trained = {(w["experiment"], w["dataset"], w["method"]) for rule, w in jobs if rule in ("train", "evaluate")}
    assert trained == {("semi_synthetic", d, "m2_iwae") for d in ("discrete_semicircle", "continuous_semicircle")}
    assert {w["table"] for rule, w in jobs if rule == "table"} == {"table3", "table4"}
    assert {int(w["number"]) for rule, w in jobs if rule == "semi_figure"} == {6, 19, 22}
    assert {rule for rule, _ in jobs} <= {"train", "evaluate", "table", "audit", "semi_figure", "leaderboard", "reproduction", "all"}


def test_a_method_hyper_parameter_reruns_that_method_and_what_uses_it(smoke_run, tmp_path):
    jobs = planned_jobs(smoke_run, tmp_path, {"experiments": {"unsupervised": {"methods": {"iwae": {"S": [4]}}}}})
    trained = {(w["experiment"], w["dataset"], w["method"]) for rule, w in jobs if rule in ("train", "evaluate")}
    assert trained == {("unsupervised", d, "iwae") for d in ("figure8", "clusters", "circle", "absolute_value")}
    tables = {w["table"] for rule, w in jobs if rule == "table"}
    assert tables == {"table2"}  # not table1 / sec5 / sec8, whose experiments did not change
    figures = {int(w["number"]) for rule, w in jobs if rule == "model_figure"}
    assert figures == {5, 12, 15}  # the IWAE figures and Figure 5 (VAE beside IWAE)
    assert {rule for rule, _ in jobs} <= {"train", "evaluate", "table", "audit", "model_figure", "checks", "leaderboard",
                                          "reproduction", "all"}


def test_a_data_set_size_reruns_everything_downstream_of_that_set_only(smoke_run, tmp_path):
    jobs = planned_jobs(smoke_run, tmp_path, {"data": {"synthetic": {"circle": {"n_train": 150}}}})
    datasets = {w["dataset"] for _, w in jobs if "dataset" in w}
    assert datasets == {"circle"}
    rules = {rule for rule, _ in jobs}
    assert {"simulate_dataset", "plot_data", "fit_gt_encoder", "train", "evaluate", "table"} <= rules
    assert "fit_surrogate" not in rules  # the surrogate does not depend on the sample size
    assert {w["table"] for rule, w in jobs if rule == "table"} == {"table2"}
    assert {int(w["number"]) for rule, w in jobs if rule == "model_figure"} == {5, 8}


def test_the_report_is_one_self_contained_html_file_with_every_table_and_figure(smoke_run, tmp_path):
    assert smoke_run.result.returncode == 0, smoke_run.result.stderr[-3000:]
    html = tmp_path / "report.html"
    result = snakemake(smoke_run.work, "--report", str(html), "--configfile", "config/smoke.yaml", "local.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text()
    for name in ("figure5.png", "figure23.png", "table1.csv", "table2.csv", "REPRODUCTION.md", "figures/data/circle.png"):
        assert name in text, name
    assert not re.search(r'(src|href)="https?://', text)  # renders offline
