"""A real single-node SLURM cluster on 127.0.0.1, for the cluster tests (Debian's slurm-wlm + munge).

    python tests/cluster/slurm.py up      # install if absent, start, wait until the node is idle
    python tests/cluster/slurm.py down    # stop the daemons `up` started, by PID
    python tests/cluster/slurm.py status  # sinfo and squeue of the test cluster

`up` prints the environment the SLURM clients need (`export SLURM_CONF=...`). Everything lives in
one state folder (default /tmp/fmvae-slurm): the munge key and socket, spool, state, logs and PID
files; slurm.conf and gres.conf go to /etc/slurm (Snakemake's SLURM job step drops SLURM_CONF from
the environment of the `srun` inside each job, so the default location is the only one that works)
and are removed again by `down`. An /etc/slurm/slurm.conf that this script did not write is left
alone: `up` refuses to start. No systemd: the daemons are started directly (munged, slurmctld -D,
slurmd -D) on their own ports and stopped by PID.

The configuration follows what a CI machine like this project's needs (snakemake 9.27,
snakemake-executor-plugin-slurm 2.8, Debian slurm-wlm 22.05):
- one node named after `hostname -s`, NodeAddr 127.0.0.1, CPUs and RealMemory from `slurmd -C`
  (a RealMemory above what slurmd detects makes the node INVAL);
- select/cons_tres with cores and memory consumable, proctrack/linuxproc, task/none (no cgroups);
- no accounting (no slurmdbd: `sacct` fails), so MinJobAge=3600 keeps finished jobs visible to
  `squeue`: long enough for Snakemake's status checks (`slurm-status-command: squeue`; 300, SLURM's
  default, is enough for those), and for the test to list every job of a whole smoke run afterwards;
- EnforcePartLimits=ALL: an impossible request fails at submission instead of pending forever;
- a `gpu` GRES of two "GPUs" backed by File=/dev/null and File=/dev/zero, so GPU submissions
  (`--gpus=1`) are accepted and two run at once on a CPU-only machine, where the code falls back to
  the CPU (with one, the GPU route's training jobs ran one at a time and held the other route back).

The pytest side (tests/test_slurm.py) holds an exclusive lock on the state folder while the cluster
is up, so two test sessions on one machine take turns instead of fighting over the ports.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_STATE = Path(os.environ.get("FMVAE_SLURM_STATE", "/tmp/fmvae-slurm"))
PACKAGES = ["slurm-wlm", "munge"]
DAEMONS = ["munged", "slurmctld", "slurmd"]
CONF_DIR = Path("/etc/slurm")
MARKER = "# Written by tests/cluster/slurm.py"
CTLD_PORT = 6917  # not SLURM's defaults (6817/6818), so a system SLURM on this machine is not disturbed
SLURMD_PORT = 6918


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (the tests skip with this message)."""


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot be brought up on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "a local SLURM needs Linux"
    if installed():
        return None if os.geteuid() == 0 else "starting slurmctld/slurmd/munged needs root"
    if os.geteuid() != 0:
        return "installing slurm-wlm and munge needs root"
    if shutil.which("apt-get") is None:
        return "slurm-wlm and munge are not installed and there is no apt-get to install them"
    return None


def installed() -> bool:
    return all(shutil.which(tool) for tool in ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"])


def install(log=print) -> None:
    """apt-get install slurm-wlm and munge (one apt-get update first) unless they are present."""
    if installed():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing slurm-wlm and munge with apt-get")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    if not installed():
        raise SlurmUnavailable("apt-get installed slurm-wlm and munge, but their programs are not on PATH")


def node_hardware() -> dict[str, str]:
    """`slurmd -C`'s description of this machine (NodeName, CPUs, ..., RealMemory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60, check=False).stdout
    first = next((line for line in out.splitlines() if line.startswith("NodeName=")), None)
    if first is None:
        raise SlurmUnavailable(f"`slurmd -C` did not describe the node:\n{out}")
    return dict(item.split("=", 1) for item in first.split())


class Cluster:
    """The test cluster's files and daemons under one state folder."""

    def __init__(self, state: Path = DEFAULT_STATE):
        self.state = Path(state)
        self.conf = CONF_DIR / "slurm.conf"
        self.munge_socket = self.state / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._lock = None

    # -- lifecycle ---------------------------------------------------------------------------

    def lock(self, timeout: float = 1800) -> None:
        """Exclusive lock on the state folder (another test session waits for it)."""
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state.parent / f".{self.state.name}.lock", "w")  # noqa: SIM115 (held open until unlock())
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SlurmUnavailable(f"another session holds the test SLURM at {self.state}")
                time.sleep(2)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def up(self, timeout: float = 90, log=print) -> dict:
        """Install if needed, write the configuration, start the daemons, wait for an idle node.
        Returns the environment for SLURM clients (os.environ plus SLURM_CONF)."""
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        install(log)
        self.down(log=lambda *a: None)  # daemons left over by an earlier run of this script
        if self.conf.exists() and MARKER not in self.conf.read_text(errors="replace"):
            raise SlurmUnavailable(f"{self.conf} exists and was not written by this script (a system SLURM?)")
        for sub in ["munge", "spool", "ctld", "log", "run"]:
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state / "munge", 0o700)
        self._write_munge_key()
        self._write_config()
        started = time.monotonic()
        self._start("munged", ["munged", "--foreground", "--force",
                               f"--key-file={self.state / 'munge' / 'munge.key'}",
                               f"--socket={self.munge_socket}",
                               f"--pid-file={self.state / 'run' / 'munged.pid'}",
                               f"--seed-file={self.state / 'munge' / 'munge.seed'}",
                               f"--log-file={self.state / 'log' / 'munged.log'}"])
        self._wait(lambda: self.munge_socket.exists(), 20, "munged did not create its socket")
        self._start("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("UP") >= 1, 30,
                   "slurmctld does not answer `scontrol ping`")
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self.idle, timeout, "the node did not become idle")
        log(f"SLURM up in {time.monotonic() - started:.1f} s: {self.sinfo().strip()}")
        return self.env

    def down(self, log=print) -> None:
        """Cancel the cluster's jobs and stop the daemons this script started, by PID."""
        if self._alive("slurmctld"):
            jobs = self._run(["squeue", "-h", "-o", "%i"]).stdout.split()
            if jobs:
                self._run(["scancel", *jobs], timeout=10)
        for name in reversed(DAEMONS):
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 15
            while self._alive(name) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._alive(name):
                os.kill(pid, signal.SIGKILL)
            (self.state / "run" / f"{name}.started").unlink(missing_ok=True)
            log(f"stopped {name} (pid {pid})")
        for path in (self.conf, CONF_DIR / "gres.conf"):
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()

    # -- queries -----------------------------------------------------------------------------

    def idle(self) -> bool:
        states = self._run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.split()
        return bool(states) and all(s.rstrip("*") == "idle" for s in states)

    def sinfo(self) -> str:
        return self._run(["sinfo", "-N", "-o", "%N %T %c %m %G"]).stdout

    def squeue(self) -> str:
        return self._run(["squeue", "-o", "%i %j %T %M %R"]).stdout

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in DAEMONS:
            path = self.state / "log" / f"{name}.log"
            if path.exists():
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------------

    def _run(self, cmd, timeout=30):
        try:
            return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        except (subprocess.TimeoutExpired, FileNotFoundError) as err:
            return subprocess.CompletedProcess(cmd, 1, "", str(err))

    def _write_munge_key(self) -> None:
        key = self.state / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)

    def _write_config(self) -> None:
        hw = node_hardware()
        host = socket.gethostname().split(".")[0]
        memory = int(hw["RealMemory"])
        node = " ".join(f"{k}={hw[k]}" for k in ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                 "ThreadsPerCore"] if k in hw)
        s = self.state
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
{MARKER}: a single-node test cluster on 127.0.0.1, no accounting.
ClusterName=fmvae-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={s / 'ctld'}
SlurmdSpoolDir={s / 'spool'}
SlurmctldPidFile={s / 'run' / 'slurmctld.pid'}
SlurmdPidFile={s / 'run' / 'slurmd.pid'}
SlurmctldLogFile={s / 'log' / 'slurmctld.log'}
SlurmdLogFile={s / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
EnforcePartLimits=ALL
ReturnToService=2
SlurmdTimeout=60
KillWait=5
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 {node} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        (CONF_DIR / "gres.conf").write_text(f"{MARKER}\nNodeName={host} Name=gpu File=/dev/null\n"
                                              f"NodeName={host} Name=gpu File=/dev/zero\n")

    def _start(self, name: str, cmd: list[str]) -> None:
        with open(self.state / "log" / f"{name}.out", "w") as log:  # the daemon keeps its own copy
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        (self.state / "run" / f"{name}.started").write_text(f"{proc.pid}\n")
        time.sleep(0.3)
        if proc.poll() is not None:
            raise SlurmUnavailable(f"{name} exited at once ({proc.returncode}):\n"
                                   f"{(self.state / 'log' / f'{name}.out').read_text()[-2000:]}\n{self.log_tail()}")

    def _pid(self, name: str) -> int | None:
        path = self.state / "run" / f"{name}.started"
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, name: str) -> bool:
        """The recorded process is running and is still the daemon this script started."""
        pid = self._pid(name)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            os.waitpid(pid, os.WNOHANG) if _is_child(pid) else None
            return False
        return Path(cmdline[0].decode()).name == name

    def _wait(self, condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{message} within {timeout:.0f} s\n{self.sinfo()}\n{self.log_tail()}")


def _is_child(pid: int) -> bool:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[2]) == os.getpid()
    except (FileNotFoundError, ValueError, IndexError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state folder (default %(default)s)")
    args = parser.parse_args(argv)
    cluster = Cluster(args.state)
    try:
        if args.action == "up":
            cluster.up(log=lambda msg: print(msg, file=sys.stderr))
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.action == "down":
            cluster.down()
        else:
            print(cluster.sinfo() + cluster.squeue())
    except SlurmUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
