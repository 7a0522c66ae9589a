"""Every kustomization under cluster/k8s renders, and every object validates against the
Kubernetes API schemas (official client models; RayJob: KubeRay's structure, pod templates
with the official model). Rendered with `kubectl kustomize` when kubectl is on PATH (then the
pure-Python renderer must agree with it), else with tests/cluster/kustomize_lite.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.cluster import kustomize_lite
from tests.cluster.k8s_validate import validate
from tests.conftest import ROOT

K8S = ROOT / "cluster" / "k8s"
KUSTOMIZATIONS = sorted(
    p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml")
)
KUBECTL = shutil.which("kubectl")


def _key(o: dict) -> tuple:
    return o["kind"], o["metadata"]["name"]


def render(rel: str) -> list[dict]:
    if KUBECTL:
        out = subprocess.run([KUBECTL, "kustomize", str(K8S / rel)], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=_key)
    return sorted(kustomize_lite.render(K8S / rel), key=_key)


def _pod_templates(o: dict) -> list[dict]:
    if o["kind"] == "Job":
        return [o["spec"]["template"]]
    if o["kind"] == "RayJob":
        c = o["spec"]["rayClusterSpec"]
        return [c["headGroupSpec"]["template"]] + [g["template"] for g in c["workerGroupSpecs"]]
    return []


def test_layout():
    assert {"ingest", "pack", "tokenize", "pretrain"} <= set(KUSTOMIZATIONS)
    assert any(k.startswith("overlays/") for k in KUSTOMIZATIONS)


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_renders_and_validates(rel, k8s_models):
    objs = render(rel)
    assert objs
    for o in objs:
        validate(k8s_models, o)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: nothing to compare with")
@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_lite_renderer_agrees_with_kubectl(rel):
    assert sorted(kustomize_lite.render(K8S / rel), key=_key) == render(rel)


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_job_contract(rel):
    """Images set, S3 credentials from the Secret, /dev/shm in memory, resources, restarts."""
    objs = render(rel)
    by_kind = {o["kind"]: o for o in objs}
    for o in objs:
        for t in _pod_templates(o):
            spec = t["spec"]
            shm = {v["name"]: v for v in spec["volumes"]}["dshm"]
            assert shm["emptyDir"]["medium"] == "Memory"
            for c in spec["containers"]:
                assert "/" in c["image"] and ":" in c["image"], c["image"]  # a registry image
                assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
                assert {"secretRef": {"name": "brainomni-s3", "optional": True}} in c["envFrom"]
                assert c["resources"]["requests"] and c["resources"]["limits"]
    if "RayJob" in by_kind:
        spec = by_kind["RayJob"]["spec"]
        assert spec["entrypoint"].startswith("python /opt/brainomni/pipelines/")  # see
        # test_launch_files.py: the script exists and its arguments parse
        assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    if "Job" in by_kind:
        job, cm = by_kind["Job"], by_kind["ConfigMap"]["data"]
        assert job["spec"]["completionMode"] == "Indexed"
        n = int(cm["NNODES"])
        assert job["spec"]["parallelism"] == job["spec"]["completions"] == n
        assert job["spec"]["backoffLimit"] >= 1
        tspec = job["spec"]["template"]["spec"]
        assert tspec["restartPolicy"] == "OnFailure"
        (c,) = tspec["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == cm["GPUS_PER_NODE"]
        cm_ref = {"configMapRef": {"name": by_kind["ConfigMap"]["metadata"]["name"]}}
        assert cm_ref in c["envFrom"]
        script = c["args"][0]
        if shutil.which("shellcheck"):  # its variables come from the ConfigMap: SC2154 off
            r = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", "-e", "SC2154", "-"],
                               input=script, capture_output=True, text=True)  # fmt: skip
            assert r.returncode == 0, r.stdout
        assert "--resume" in script and "checkpoints/step-*/meta.json" in script
        assert '--node-rank="$NODE_RANK"' in script and "JOB_COMPLETION_INDEX" in script
        svc = by_kind["Service"]
        assert svc["spec"]["clusterIP"] == "None" and tspec["subdomain"] == svc["metadata"]["name"]
        assert svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}


def test_validator_rejects_mistakes(k8s_models):
    """The validation has teeth: a misspelt field, a wrong type, a missing required field."""
    (job,) = [o for o in render("pretrain") if o["kind"] == "Job"]
    bad_key = yaml.safe_load(yaml.safe_dump(job))
    bad_key["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    bad_type = yaml.safe_load(yaml.safe_dump(job))
    bad_type["spec"]["completions"] = "2"
    missing = yaml.safe_load(yaml.safe_dump(job))
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    for obj in (bad_key, bad_type, missing):
        with pytest.raises(ValueError):
            validate(k8s_models, obj)
    (rayjob,) = render("ingest")
    bad = yaml.safe_load(yaml.safe_dump(rayjob))
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 3
    with pytest.raises(ValueError, match="replica"):
        validate(k8s_models, bad)
    del bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"]
    head = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["volumes"][0]["emptyDir"]["medium"] = 1
    with pytest.raises(ValueError, match="medium"):
        validate(k8s_models, bad)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
def test_readme_secret_command_makes_a_valid_secret(k8s_models):
    """cluster/README.md's Secret, made offline with --dry-run=client."""
    out = subprocess.run(
        [KUBECTL, "create", "secret", "generic", "brainomni-s3", "--namespace", "brainomni",
         "--from-literal=AWS_ACCESS_KEY_ID=KEY", "--from-literal=AWS_SECRET_ACCESS_KEY=SECRET",
         "--from-literal=AWS_ENDPOINT_URL=https://s3.example.org", "--dry-run=client", "-o", "yaml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    secret = yaml.safe_load(out.stdout)
    validate(k8s_models, secret)
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
