#!/usr/bin/env python3
"""Status of one SLURM job for snakemake-executor-plugin-cluster-generic: prints running, success or
failed.  Usage: status.py JOBID

Asks squeue first (the controller's memory: pending, running and, for MinJobAge seconds, finished
jobs), then scontrol, then sacct (accounting, for jobs the controller has forgotten). A job that
none of them knows while the controller answers is reported failed rather than waited for forever;
when nothing answers (controller busy or restarting), the job is reported running and asked about
again at the next check. Standard library only.
"""

import subprocess
import sys

RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
           "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
SUCCESS = {"COMPLETED"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}


def ask(cmd):
    """(answered, stdout): answered is False when the command failed for another reason than an
    unknown job id."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"status.py: {cmd[0]}: {err}", file=sys.stderr)
        return False, ""
    if result.returncode != 0:
        if "invalid job id" in result.stderr.lower():
            return True, ""
        print(f"status.py: {' '.join(cmd)}: {result.stderr.strip()}", file=sys.stderr)
        return False, ""
    return True, result.stdout


def classify(state):
    state = state.strip().split()[0].rstrip("+") if state.strip() else ""
    if state in SUCCESS:
        return "success"
    if state in FAILED:
        return "failed"
    if state in RUNNING:
        return "running"
    return None


def status(jobid):
    answers = []
    ok, out = ask(["squeue", "--noheader", "--states=all", "--jobs", jobid, "--format=%T"])
    answers.append(ok)
    if ok and classify(out):
        return classify(out)
    ok, out = ask(["scontrol", "--oneliner", "show", "job", jobid])
    answers.append(ok)
    for field in out.split():
        if field.startswith("JobState=") and classify(field.split("=", 1)[1]):
            return classify(field.split("=", 1)[1])
    ok, out = ask(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", jobid, "--format=State"])
    if ok and out.strip() and classify(out.splitlines()[-1]):
        return classify(out.splitlines()[-1])
    if any(answers):
        print(f"status.py: job {jobid} is unknown to squeue, scontrol and sacct; reporting it failed",
              file=sys.stderr)
        return "failed"
    return "running"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(status(sys.argv[1]))
