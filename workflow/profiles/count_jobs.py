#!/usr/bin/env python3
"""How many SLURM jobs a run submits through a cluster profile, and what each carries.

    python workflow/profiles/count_jobs.py --profile workflow/profiles/slurm --configfile config/paper.yaml

Runs Snakemake's dry run with the given arguments in a copy of the workflow with nothing built (so
it counts a whole run; arguments naming existing files or folders are passed as absolute paths) and
sorts the jobs into SLURM submissions: each group job is one, each job of a rule that is not a
localrule is one; localrules run in the Snakemake process. Prints a Markdown table. Standard
library only (Snakemake must be installed in this Python).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parents[2]


def local_rules() -> set[str]:
    """Rule names listed under `localrules:` in the Snakefile and workflow/rules/*.smk."""
    names = set()
    for path in [WORKFLOW / "Snakefile", *sorted((WORKFLOW / "workflow" / "rules").glob("*.smk"))]:
        for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\w+,?[ \t]*\n)+)", path.read_text(), flags=re.MULTILINE):
            names.update(re.findall(r"\w+", block))
    return names | {"all"}


def count(dry_run: str, local: set[str]) -> tuple[dict[str, Counter], Counter, Counter]:
    """(members of each group job by group name, ungrouped remote jobs per rule, local jobs per rule)."""
    groups: dict[str, list[Counter]] = defaultdict(list)
    remote, local_jobs = Counter(), Counter()
    current = None
    for line in dry_run.splitlines():
        if match := re.search(r"Group job (\w+)", line):
            current = Counter()
            groups[match.group(1)].append(current)
        elif (match := re.match(r"^    (?:local)?rule (\w+):", line)) and current is not None:
            current[match.group(1)] += 1
        elif match := re.match(r"^(?:local)?rule (\w+):", line):
            current = None
            (local_jobs if match.group(1) in local else remote)[match.group(1)] += 1
    return groups, remote, local_jobs


def main(argv: list[str]) -> int:
    args = [str(Path(a).resolve()) if Path(a).exists() else a for a in argv]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["Snakefile", "environment.yml"]:
            shutil.copy(WORKFLOW / name, tmp)
        for name in ["workflow", "config"]:
            shutil.copytree(WORKFLOW / name, Path(tmp) / name)
        result = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=tmp, capture_output=True,
                                text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        return result.returncode
    groups, remote, local_jobs = count(result.stdout + result.stderr, local_rules())
    rows = []
    for name, jobs in sorted(groups.items()):
        sizes = [sum(c.values()) for c in jobs]
        rules = Counter()
        for c in jobs:
            rules.update(c)
        inside = ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items()))
        rows.append((f"group `{name}`", len(jobs), f"{min(sizes)}–{max(sizes)} jobs each ({inside})"))
    for rule, n in sorted(remote.items()):
        rows.append((f"`{rule}`", n, "1 job each"))
    total = sum(r[1] for r in rows)
    print("| SLURM job | SLURM jobs | carries |\n|---|---|---|")
    for kind, n, what in rows:
        print(f"| {kind} | {n} | {what} |")
    print(f"| **total** | **{total}** | |")
    print(f"\nLocal rules, run by Snakemake itself: {sum(local_jobs.values()) - local_jobs['all']} jobs "
          f"({', '.join(f'{r} {n}' for r, n in sorted(local_jobs.items()) if r != 'all')}).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
