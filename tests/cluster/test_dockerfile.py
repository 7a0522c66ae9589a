"""cluster/Dockerfile's install steps, run in a fresh virtual environment per target.

No Docker daemon: each stage's COPY sources are copied to a folder (its WORKDIR), a venv is
made, and every RUN line of the stage is run there with the venv first on PATH, except the
system steps (apt-get, which also makes the image's /opt/venv). To stay fast and offline-
friendly the venv sees this environment's packages through a .pth file (torch, deepspeed, ray
are not downloaded again: pip finds them installed) and the project is built without build
isolation; the project itself, its extras' resolution and its entry points are real."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
DOCKERFILE = ROOT / "cluster" / "Dockerfile"


def parse(text: str) -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """(global ARG defaults, {stage: [(INSTRUCTION, arguments), ...]})."""
    text = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"unnamed stage: {line}"
            current = m.group(2)
            stages[current] = []
        elif current is None:
            assert instr == "ARG", line
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[current].append((instr, rest.strip()))
    return args, stages


def _system_step(cmd: str) -> bool:
    return cmd.startswith("apt-get")


@pytest.mark.parametrize("stage", ["ingest", "train"])
def test_install_steps_in_fresh_venv(stage, tmp_path):
    args, stages = parse(DOCKERFILE.read_text())
    steps = stages[stage]
    if stage == "train":
        pytest.importorskip("torch")
        pytest.importorskip("deepspeed")
    workdir = tmp_path / "image"
    workdir.mkdir()
    for instr, rest in steps:  # COPY src... dest (relative to WORKDIR)
        if instr == "COPY":
            *srcs, dest = shlex.split(rest)
            for src in srcs:
                target = workdir / dest / Path(src).name if dest.endswith("/") else workdir / dest
                if (ROOT / src).is_dir():
                    shutil.copytree(
                        ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / src, target)
    venv = tmp_path / "venv"
    # No pip/setuptools of its own: the outer ones (setuptools new enough for pyproject.toml's
    # build-system) are seen through the .pth file; pip installs into this venv's prefix.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    (venv / "bin" / "pip").write_text(f'#!/bin/sh\nexec "{venv}/bin/python" -m pip "$@"\n')
    (venv / "bin" / "pip").chmod(0o755)
    site = subprocess.run([venv / "bin" / "python", "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "_outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, **args, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    ran = []
    for instr, rest in steps:
        if instr == "ENV":
            continue
        if instr != "RUN" or _system_step(rest):
            continue
        cmd = re.sub(r"\bpip install\b", "pip install --no-build-isolation", rest)
        r = subprocess.run(["bash", "-c", f"set -euo pipefail; {cmd}"], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, f"RUN {rest}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        ran.append(rest)
    assert any("-e '.[ingest" in r for r in ran), ran
    py = str(venv / "bin" / "python")
    where = subprocess.run([py, "-c", "import brainomni; print(brainomni.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip() == str(workdir / "brainomni" / "__init__.py")  # this install
    help_ = subprocess.run([str(venv / "bin" / "brainomni"), "--help"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert help_.returncode == 0 and "pretrain" in help_.stdout, help_.stderr
    ingest = subprocess.run([py, "pipelines/ingest.py", "--help"], env=env, cwd=workdir,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ingest.returncode == 0 and "--source" in ingest.stdout, ingest.stderr
    if stage == "train":
        assert any("torch==" in r for r in ran) and any("deepspeed==" in r for r in ran)
        pre = subprocess.run([py, "-m", "brainomni", "pretrain", "--help"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert pre.returncode == 0 and "--zero-stage" in pre.stdout, pre.stderr


def test_pins_match_the_environment():
    """The image's torch and DeepSpeed pins are the versions this repository is tested with."""
    args, _ = parse(DOCKERFILE.read_text())
    torch = pytest.importorskip("torch")
    assert torch.__version__.split("+")[0] == args["TORCH_VERSION"]
    make = (ROOT / "Makefile").read_text()
    assert f"TORCH_VERSION := {args['TORCH_VERSION']}" in make
    ds = pytest.importorskip("deepspeed")
    assert ds.__version__ == args["DEEPSPEED_VERSION"]
