"""The launch files of the Ray jobs (cluster/slurm/ray-*.sbatch, the RayJobs of cluster/k8s)
run a script of pipelines/ that exists, and the arguments they (or their usage lines) give it
parse with that script's `brainomni` command, without a deprecated option."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from brainomni.cli import build_parser
from tests.cluster.test_k8s_manifests import KUSTOMIZATIONS, render
from tests.conftest import ROOT

SLURM = sorted((ROOT / "cluster" / "slurm").glob("ray-*.sbatch"))
IMAGE_ROOT = "/opt/brainomni/"  # where cluster/Dockerfile puts the checkout


def _command_of(script: Path) -> str:
    """The `brainomni` command a pipelines/ script runs (its COMMAND)."""
    spec = importlib.util.spec_from_file_location(f"launch_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.COMMAND


def _parses(script: Path, args: list[str], capsys) -> None:
    assert script.is_file(), f"{script} does not exist"
    cmd = _command_of(script)
    ns = build_parser(f"pipelines/{script.name}", cmd).parse_args(args)
    assert ns.cmd == cmd
    err = capsys.readouterr().err
    assert "deprecated" not in err, err


def _usage(text: str) -> list[str]:
    """The arguments of the `sbatch ... SCRIPT ARGS` example in a script's header."""
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("sbatch "))
    words: list[str] = []
    for ln in lines[start:]:
        words += shlex.split(ln.rstrip("\\"))
        if not ln.endswith("\\"):
            break
    script = next(i for i, w in enumerate(words) if w.endswith(".sbatch"))
    return words[script + 1 :]


def test_every_ray_job_has_a_launch_file_per_platform():
    assert {p.name for p in SLURM} >= {
        "ray-ingest.sbatch",
        "ray-pack.sbatch",
        "ray-tokenize.sbatch",
    }
    assert {"ingest", "pack", "tokenize"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", SLURM, ids=lambda p: p.name)
def test_slurm_scripts_run_an_existing_pipeline_with_valid_arguments(path, capsys):
    text = path.read_text()
    m = re.search(r"BRAINOMNI_PIPELINE=(\S+) exec bash \"\$REPO/cluster/slurm/(\S+)\"", text)
    pipeline = m.group(1) if m else "pipelines/ingest.py"  # ray-ingest.sbatch's default
    if m:
        assert (ROOT / "cluster" / "slurm" / m.group(2)).is_file()
    _parses(ROOT / pipeline, _usage(text), capsys)


@pytest.mark.parametrize("path", SLURM, ids=lambda p: p.name)
def test_slurm_scripts_refuse_to_run_outside_an_allocation(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env["BRAINOMNI_REPO"] = str(ROOT)
    r = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "run under sbatch" in r.stderr, r.stderr


@pytest.mark.parametrize("rel", [k for k in KUSTOMIZATIONS if "pretrain" not in k])
def test_rayjob_entrypoints_run_an_existing_pipeline_with_valid_arguments(rel, capsys):
    jobs = [o for o in render(rel) if o["kind"] == "RayJob"]
    if not jobs:
        pytest.skip(f"{rel}: no RayJob")
    for job in jobs:
        python, script, *args = shlex.split(job["spec"]["entrypoint"])
        assert python == "python" and script.startswith(IMAGE_ROOT), script
        _parses(ROOT / script[len(IMAGE_ROOT) :], args, capsys)
