"""Stand-ins for Slurm's `srun` and `scontrol`, so the sbatch scripts run on one machine.

:func:`install` writes executables ``srun`` and ``scontrol`` into a folder to put first on
PATH. Like Slurm, ``srun`` starts one task per selected node of ``SLURM_JOB_NODELIST`` (all of
them here, on this machine) with that node's environment (``SLURM_NODEID`` relative to the
allocation, ``SLURM_PROCID`` within the step, ``SLURMD_NODENAME``, ...), gives the tasks no
stdin, forwards SIGINT/SIGTERM to them, stops the others when one fails under
``--kill-on-bad-exit``, and exits with the first non-zero task status. ``scontrol show
hostnames`` expands a node list; ``scontrol requeue`` is recorded. Every call is appended as a
JSON line to ``$SLURM_SHIM_LOG`` when that is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# srun options that take a value (given as `--opt value`, `--opt=value` or `-x value`).
_VALUED = {
    "-N": "nodes", "--nodes": "nodes", "-n": "ntasks", "--ntasks": "ntasks",
    "--ntasks-per-node": "ntasks_per_node", "-w": "nodelist", "--nodelist": "nodelist",
    "-x": "exclude", "--exclude": "exclude", "--export": "export", "-J": "job_name",
    "--job-name": "job_name", "-o": "output", "--output": "output", "-e": "error",
    "--error": "error", "-c": "cpus_per_task", "--cpus-per-task": "cpus_per_task",
    "--gpus-per-node": "gpus", "--gres": "gres", "--cpu-bind": "cpu_bind",
    "--kill-on-bad-exit": "kill_on_bad_exit", "-K": "kill_on_bad_exit", "--mpi": "mpi",
}  # fmt: skip
_FLAGS = {"--overlap", "--exact", "--unbuffered", "-u", "-l", "--label", "--no-kill", "-k"}


def expand_hostlist(text: str) -> list[str]:
    """``"cn[01-03,07],gpu5"`` -> ``["cn01", "cn02", "cn03", "cn07", "gpu5"]`` (as scontrol)."""
    items, cur, depth = [], "", 0
    for c in text:
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += c
    items.append(cur)
    out: list[str] = []
    for item in filter(None, items):
        m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
        if not m:
            out.append(item)
            continue
        prefix, body, suffix = m.groups()
        for part in body.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                names = [f"{prefix}{n:0{len(lo)}d}{suffix}" for n in range(int(lo), int(hi) + 1)]
            else:
                names = [f"{prefix}{part}{suffix}"]
            for name in names:
                out += expand_hostlist(name)
    return out


def _log(entry: dict) -> None:
    path = os.environ.get("SLURM_SHIM_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def parse_srun(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            break
        key, eq, val = a.partition("=")
        if key in _VALUED:
            if key == "-K" or (key == "--kill-on-bad-exit" and not eq):  # value optional
                opts["kill_on_bad_exit"] = "1"
            elif eq:
                opts[_VALUED[key]] = val
            else:
                i += 1
                opts[_VALUED[key]] = argv[i]
        elif a in _FLAGS:
            pass
        else:
            raise SystemExit(f"srun shim: unsupported option {a!r}")
        i += 1
    return opts, argv[i:]


def srun_main(argv: list[str]) -> int:
    opts, cmd = parse_srun(argv)
    if not cmd:
        raise SystemExit("srun shim: no command")
    job_nodes = expand_hostlist(os.environ["SLURM_JOB_NODELIST"])
    nodes = expand_hostlist(opts["nodelist"]) if "nodelist" in opts else list(job_nodes)
    excluded = set(expand_hostlist(opts.get("exclude", "")))
    nodes = [n for n in nodes if n not in excluded]
    if "nodes" in opts:
        nodes = nodes[: int(opts["nodes"])]
    ntasks = int(opts.get("ntasks", len(nodes)))
    if ntasks != len(nodes) or opts.get("ntasks_per_node", "1") != "1":
        raise SystemExit(f"srun shim: only one task per node ({ntasks} tasks, {nodes})")
    step = int(os.environ.get("SLURM_SHIM_STEP", "0"))
    os.environ["SLURM_SHIM_STEP"] = str(step + 1)  # not seen by the caller; per-call counter
    _log({"prog": "srun", "opts": opts, "cmd": cmd, "nodes": nodes, "pid": os.getpid()})
    procs = []
    for task, node in enumerate(nodes):
        env = {
            **os.environ,
            "SLURM_NODEID": str(job_nodes.index(node)),
            "SLURM_PROCID": str(task),
            "SLURM_LOCALID": "0",
            "SLURMD_NODENAME": node,
            "SLURM_STEP_NODELIST": ",".join(nodes),
            "SLURM_STEP_NUM_NODES": str(len(nodes)),
            "SLURM_STEP_NUM_TASKS": str(ntasks),
            "SLURM_NTASKS": str(ntasks),
            "SLURM_STEPID": str(os.getpid()),
            "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1",
        }
        procs.append(
            subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        )

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    kill_on_bad = opts.get("kill_on_bad_exit", "0") not in ("0", "")
    rc = 0
    while any(p.poll() is None for p in procs):
        bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if bad and kill_on_bad:
            forward(signal.SIGTERM, None)
            deadline = time.monotonic() + 10
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.1)
            forward(signal.SIGKILL, None)
            break
        time.sleep(0.1)
    for p in procs:
        p.wait()
        if p.returncode and not rc:
            rc = p.returncode if p.returncode > 0 else 128 - p.returncode
    return rc


def scontrol_main(argv: list[str]) -> int:
    _log({"prog": "scontrol", "args": argv})
    if argv[:2] == ["show", "hostnames"]:
        text = argv[2] if len(argv) > 2 else os.environ["SLURM_JOB_NODELIST"]
        print("\n".join(expand_hostlist(text)))
        return 0
    if argv[:1] == ["requeue"]:
        return 0
    raise SystemExit(f"scontrol shim: unsupported {argv}")


def install(folder: Path, *, scontrol: bool = True) -> Path:
    """Write ``srun`` (and ``scontrol``) into ``folder``; returns it (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    progs = {"srun": "srun_main"} | ({"scontrol": "scontrol_main"} if scontrol else {})
    for name, fn in progs.items():
        exe = folder / name
        exe.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
            f"from tests.cluster.slurm_shim import {fn}\nsys.exit({fn}(sys.argv[1:]))\n"
        )
        exe.chmod(0o755)
    return folder
