"""Fixtures of the cluster tests: Slurm shims and a two-"node" environment on this machine,
a small published shard manifest for pretraining, the Kubernetes API models."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
VENV_BIN = Path(sys.executable).parent


def two_node_names() -> list[str]:
    """Two distinct node names that both resolve to this machine's loopback address."""
    second = socket.gethostname()
    try:
        loopback = socket.gethostbyname(second).startswith("127.")
    except OSError:
        loopback = False
    return ["localhost", second if loopback and second != "localhost" else "127.0.0.1"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_port_block(size: int, count: int) -> int:
    """A base port such that ``count`` blocks of ``size`` ports from it are all free now."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000 - size * count)
        socks = []
        try:
            for p in range(base, base + size * count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


@pytest.fixture(scope="session")
def slurm_shims(tmp_path_factory) -> Path:
    from tests.cluster.slurm_shim import install

    return install(tmp_path_factory.mktemp("slurm-shims"))


@pytest.fixture
def slurm_env(slurm_shims, tmp_path) -> Callable[..., dict[str, str]]:
    """The environment `sbatch` gives a batch script on a 2-node allocation (job 4242)."""

    def make(**extra: str) -> dict[str, str]:
        nodes = two_node_names()
        env = {
            **os.environ,
            "PATH": f"{slurm_shims}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOBID": "4242",
            "SLURM_JOB_NAME": "test",
            "SLURM_JOB_NODELIST": ",".join(nodes),
            "SLURM_NODELIST": ",".join(nodes),
            "SLURM_NNODES": "2",
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_NODEID": "0",  # the batch script runs on the first node
            "SLURM_PROCID": "0",
            "SLURMD_NODENAME": nodes[0],
            "SLURM_SUBMIT_DIR": str(ROOT),
            "SLURM_CPUS_ON_NODE": "1",
            "SLURM_SHIM_LOG": str(tmp_path / "slurm-calls.jsonl"),
            "RAY_AUTH_MODE": "disabled",
            "OMP_NUM_THREADS": "1",
        }
        env.update(extra)
        return env

    return make


@pytest.fixture(scope="session")
def pretrain_manifest() -> Path:
    """A published tokenizer-10s manifest over a few real recordings (tests/pack/corpus.py):
    the pack the loader and pretraining tests use, built once per session."""
    from tests.conftest import MEEG_DIR, SKIP_REASON

    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.loader.data import packed_manifest

    return packed_manifest("tokenizer-10s")


@pytest.fixture(scope="session")
def k8s_models(request):
    from tests.cluster.k8s_validate import kubernetes_models

    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = (
        cache.mkdir("k8s-models")
        if cache
        else request.getfixturevalue("tmp_path_factory").mktemp("k8s")
    )
    return kubernetes_models(Path(folder))
