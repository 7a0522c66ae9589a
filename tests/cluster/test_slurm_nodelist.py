"""The node-list expansion both sbatch scripts fall back on when `scontrol` is absent, against
the shim's (scontrol-compatible) expansion; and the scripts' refusal to run outside a job."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.cluster.slurm_shim import expand_hostlist
from tests.conftest import ROOT

SCRIPTS = [ROOT / "cluster" / "slurm" / n for n in ("pretrain.sbatch", "ray-ingest.sbatch")]
CASES = {
    "cn01": ["cn01"],
    "cn[01-03]": ["cn01", "cn02", "cn03"],
    "gpu[8-11,15],login2": ["gpu8", "gpu9", "gpu10", "gpu11", "gpu15", "login2"],
    "a[001-002]-ib,b7": ["a001-ib", "a002-ib", "b7"],
    "rack[1-2]-n[01-02]": ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"],
}


def _function(script) -> str:
    lines = script.read_text().splitlines()
    start = lines.index(next(x for x in lines if x.startswith("expand_nodelist()")))
    end = lines.index("}", start)
    return "\n".join(lines[start : end + 1])


def test_both_scripts_share_one_expansion():
    assert _function(SCRIPTS[0]) == _function(SCRIPTS[1])


@pytest.mark.parametrize("nodelist", sorted(CASES))
def test_expand_nodelist_matches_scontrol(nodelist):
    out = subprocess.run(
        ["bash", "-c", _function(SCRIPTS[0]) + '\nexpand_nodelist "$1"', "x", nodelist],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == CASES[nodelist] == expand_hostlist(nodelist)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_refuses_to_run_outside_a_job(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(MANIFEST="m.json", OUT=str(tmp_path))
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode != 0 and "run under sbatch" in r.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sbatch_header(script):
    head = [x for x in script.read_text().splitlines() if x.startswith("#SBATCH")]
    assert "#SBATCH --ntasks-per-node=1" in head  # one launcher / Ray node per node
    if script.name == "pretrain.sbatch":
        assert "#SBATCH --requeue" in head and any("--signal=B:USR1@" in x for x in head)
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", str(script)],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stdout
