"""cluster/README.md as a new user reads it: every shell block says who runs it — a test
(`# run by tests: FILE...`, files that must exist) or nobody here (`# (needs a real cluster)`)
— and the blocks that name this file are run, line by line, from the repository root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = ROOT / "cluster" / "README.md"
BLOCKS = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
THIS = "tests/cluster/test_readme.py"


def _tag(block: str) -> str:
    return block.splitlines()[0]


def test_every_block_says_who_runs_it():
    assert BLOCKS
    for block in BLOCKS:
        tag = _tag(block)
        if tag.startswith("# (needs a real cluster)"):
            continue
        m = re.match(r"# run by tests: (.*?)(?: \(|$)", tag)
        assert m, f"block without its tag:\n{block}"
        for path in m.group(1).split():
            assert (ROOT / path).is_file(), f"{path} named by a README block does not exist"


def test_documented_scripts_and_overlays_exist():
    text = README.read_text()
    for rel in re.findall(r"(?<![\w/])cluster/[\w./-]+", text):
        assert (ROOT / rel.rstrip(".")).exists(), rel


@pytest.mark.parametrize("block", [b for b in BLOCKS if THIS in _tag(b)], ids=_tag)
def test_blocks_run_by_this_file(block):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    for line in block.splitlines()[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("kubectl") and shutil.which("kubectl") is None:
            pytest.skip("kubectl not on PATH (rendering is covered by test_k8s_manifests.py)")
        r = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0 and r.stdout.strip(), f"{line}\n{r.stderr[-2000:]}"
