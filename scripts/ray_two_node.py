"""Run the ingest job on a two-node Ray cluster on this machine, through `ray job submit`.

    RAY_AUTH_MODE=disabled .venv/bin/python scripts/ray_two_node.py --dest OUT -- --source URL ...

Starts a head node (1 CPU, dashboard) and a second node (1 CPU) with their own free ports
and a private temp dir, submits ``pipelines/ingest.py`` with the arguments after ``--``
(plus ``--dest``), waits for it, prints the job's status and logs, and stops both nodes.
Only this cluster's processes are stopped (found by the private temp dir): `ray stop` would
also stop every other Ray on the machine. Exit code: 0 when the job SUCCEEDED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def node_args(ports: list[int]) -> list[str]:
    """Per-node ports so that two raylets can share one host."""
    nm, om, metrics, agent, agent_grpc, rt_env, wmin = ports
    return [
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--metrics-export-port={metrics}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={rt_env}",
        f"--min-worker-port={wmin}",
        f"--max-worker-port={wmin + 20}",
    ]


def ray(
    *args: str, env: dict, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ray"), *args]
    return subprocess.run(
        cmd, env=env, check=check, timeout=timeout, capture_output=True, text=True
    )


def stop_cluster(*markers: str) -> int:
    """SIGTERM, then SIGKILL, every process whose command line holds one of ``markers`` (the
    private temp dir, the GCS address) and its descendants; the number signalled."""

    def ours() -> list[int]:
        tree: dict[int, list[int]] = {}
        roots = []
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{e}/cmdline").read_bytes().decode(errors="replace")
                ppid = int(Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(e))
            if any(m in cmd for m in markers) and int(e) != os.getpid():
                roots.append(int(e))
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo += tree.get(pid, [])
        return sorted(found)

    pids = ours()
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
    return len(pids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", required=True)
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the job")
    ap.add_argument(
        "ingest_args", nargs=argparse.REMAINDER, help="-- then pipelines/ingest.py args"
    )
    args = ap.parse_args()
    extra = [a for a in args.ingest_args if a != "--"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    temp_dir = tempfile.mkdtemp(prefix="ray2n-", dir="/tmp")  # short: socket paths
    gcs, dash, client, *ports = free_ports(17)
    try:
        ray("start", "--head", f"--port={gcs}", "--num-cpus=1", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", *node_args(ports[:7]), env=env)  # fmt: skip
        ray("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--disable-usage-stats",
            *node_args(ports[7:14]), env=env)  # fmt: skip
        address = f"http://127.0.0.1:{dash}"
        entry = [sys.executable, str(ROOT / "pipelines" / "ingest.py"), "--dest", args.dest, *extra]
        sub = ray("job", "submit", f"--address={address}", "--submission-id",
                  f"ingest-{os.getpid()}", "--", *entry, env=env, check=False,
                  timeout=args.timeout)  # fmt: skip
        status = ray("job", "status", f"--address={address}", f"ingest-{os.getpid()}",
                     env=env, check=False)  # fmt: skip
        nodes = ray("status", f"--address=127.0.0.1:{gcs}", env=env, check=False)
        print(sub.stdout[-20000:], sub.stderr[-5000:], sep="\n")
        print(nodes.stdout)
        ok = "succeeded" in status.stdout.lower()
        print(json.dumps({"job_status": "SUCCEEDED" if ok else status.stdout.strip()[-500:]}))
        return 0 if ok else 1
    finally:
        n = stop_cluster(temp_dir, f":{gcs}\0")  # an argument ending with the GCS port
        print(f"stopped {n} processes of the two-node cluster", file=sys.stderr)
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
