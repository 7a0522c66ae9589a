"""One process group for the whole evaluation package (DeepSpeed over gloo, one rank).

DeepSpeed keeps a handle on the first process group it sees; a group destroyed and created
again within one process is "not registered" to it. So every module here (and every
in-process ``brainomni finetune`` call, which finds the group initialised) shares this one,
torn down after the package's last test.
"""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="package")
def dist_ctx():
    pytest.importorskip("deepspeed", reason="fine-tuning runs on DeepSpeed")
    import torch.distributed as dist

    from brainomni.evaluation.finetune import setup_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp = pytest.MonkeyPatch()
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(port)}.items():
        mp.setenv(k, v)
    yield setup_distributed()
    if dist.is_initialized():
        dist.destroy_process_group()
    mp.undo()
