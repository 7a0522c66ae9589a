"""Validate rendered Kubernetes objects against the API schemas.

Core objects (Job, Service, ConfigMap, PersistentVolumeClaim, Secret, pod templates): the
official ``kubernetes`` Python client's models (v37: pydantic models generated from the
Kubernetes OpenAPI spec, strict types and required fields). ``from_dict`` drops unknown keys
silently, so every key of the input must also come back from ``to_dict`` (a misspelt or
misplaced field fails). :func:`kubernetes_models` installs the client (``pip install --target``
into the pytest cache) when it is not importable.

KubeRay's ``RayJob`` (ray.io/v1) ships no schema on PyPI: :data:`RAYJOB_SPEC` is a structural
schema written from KubeRay's Go types (``ray-operator/apis/ray/v1/rayjob_types.go`` and
``raycluster_types.go``: field names, types, required fields), and the pod templates inside it
(head, worker groups, submitter) are validated with the official ``V1PodTemplateSpec`` model.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

KUBERNETES_CLIENT = "kubernetes==37.0.2"


def kubernetes_models(cache_dir: Path):
    """``kubernetes.client.models``, installed into ``cache_dir`` if missing."""
    try:
        return _checked(importlib.import_module("kubernetes.client.models"))
    except ImportError:
        pass
    target = cache_dir / KUBERNETES_CLIENT.replace("==", "-")
    if not (target / "kubernetes").is_dir():
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--target", str(target), KUBERNETES_CLIENT],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if r.returncode:
            raise RuntimeError(f"pip install {KUBERNETES_CLIENT} failed:\n{r.stderr[-3000:]}")
    if str(target) not in sys.path:
        sys.path.append(str(target))  # last: the environment's own packages win
    return _checked(importlib.import_module("kubernetes.client.models"))


def _checked(models):
    if not hasattr(models.V1Job, "model_validate"):
        raise RuntimeError(
            f"the installed kubernetes client has no pydantic models; install {KUBERNETES_CLIENT}"
        )
    return models


MODEL_OF = {  # (apiVersion, kind) -> official model class name
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("batch/v1", "Job"): "V1Job",
    ("v1", "PodTemplateSpec"): "V1PodTemplateSpec",
}


def _unknown_keys(given: Any, back: Any, path: str = "") -> list[str]:
    """Paths present in ``given`` but not in the model's round trip ``back``."""
    if isinstance(given, dict):
        if not isinstance(back, dict):
            return [path or "/"]
        out = []
        for k, v in given.items():
            if v is None:  # e.g. creationTimestamp: null from kubectl's dry runs
                continue
            if k not in back:
                out.append(f"{path}/{k}")
            else:
                out += _unknown_keys(v, back[k], f"{path}/{k}")
        return out
    if isinstance(given, list):
        if not isinstance(back, list) or len(back) != len(given):
            return [path]
        pairs = enumerate(zip(given, back, strict=True))
        return [p for i, (g, b) in pairs for p in _unknown_keys(g, b, f"{path}/{i}")]
    return []


def validate_core(models, obj: dict[str, Any], model: str | None = None) -> None:
    """Raise ``ValueError`` naming the problem when ``obj`` is not a valid object."""
    name = model or MODEL_OF.get((obj.get("apiVersion"), obj.get("kind")))
    if name is None:
        raise ValueError(f"no model for {obj.get('apiVersion')}/{obj.get('kind')}")
    cls = getattr(models, name)
    try:
        inst = cls.from_dict(obj)
    except Exception as exc:  # pydantic.ValidationError: field, expected type, given value
        raise ValueError(f"{name}: {exc}") from exc
    back = inst.model_dump(by_alias=True, exclude_none=True, mode="json")
    unknown = _unknown_keys(obj, back)
    if unknown:
        raise ValueError(f"{name}: fields not in the API schema: {unknown}")


# Structural schema of RayJob.spec (ray.io/v1): {field: type}; "!" marks required fields.
# Types: str, int, bool, float, map (str -> str), pod (V1PodTemplateSpec), or a nested dict /
# a one-element list of one.
_WORKER_GROUP = {
    "groupName!": "str", "replicas": "int", "minReplicas!": "int", "maxReplicas!": "int",
    "numOfHosts": "int", "rayStartParams!": "map", "template!": "pod",
    "scaleStrategy": {"workersToDelete": ["str"], "multihostReplicasToDelete": ["str"]},
    "suspend": "bool", "idleTimeoutSeconds": "int",
}  # fmt: skip
_CLUSTER = {
    "headGroupSpec!": {
        "serviceType": "str", "enableIngress": "bool", "rayStartParams!": "map",
        "template!": "pod", "headService": "any",
    },
    "workerGroupSpecs": [_WORKER_GROUP], "rayVersion": "str", "enableInTreeAutoscaling": "bool",
    "autoscalerOptions": "any", "headServiceAnnotations": "map", "suspend": "bool",
}  # fmt: skip
RAYJOB_SPEC = {
    "activeDeadlineSeconds": "int", "backoffLimit": "int", "rayClusterSpec": _CLUSTER,
    "submitterPodTemplate": "pod", "metadata": "map", "clusterSelector": "map",
    "submitterConfig": {"backoffLimit": "int"}, "managedBy": "str", "deletionStrategy": "any",
    "entrypoint": "str", "runtimeEnvYAML": "str", "jobId": "str", "submissionMode": "str",
    "entrypointResources": "str", "entrypointNumCpus": "float", "entrypointNumGpus": "float",
    "ttlSecondsAfterFinished": "int", "shutdownAfterJobFinishes": "bool", "suspend": "bool",
    "schedule": "str",
}  # fmt: skip
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}


def _check(models, value: Any, schema: Any, path: str, errors: list[str]) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object")
            return
        fields = {k.rstrip("!"): v for k, v in schema.items()}
        for k in schema:
            if k.endswith("!") and k[:-1] not in value:
                errors.append(f"{path}/{k[:-1]}: required")
        for k, v in value.items():
            if k not in fields:
                errors.append(f"{path}/{k}: not a field of the RayJob schema")
            else:
                _check(models, v, fields[k], f"{path}/{k}", errors)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            _check(models, v, schema[0], f"{path}/{i}", errors)
    elif schema == "pod":
        try:
            validate_core(models, value, "V1PodTemplateSpec")
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
    elif schema == "map":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            errors.append(f"{path}: expected a map of strings")
    elif schema != "any":
        ok = {"str": str, "int": int, "bool": bool, "float": (int, float)}[schema]
        if not isinstance(value, ok) or (schema in ("int", "float") and isinstance(value, bool)):
            errors.append(f"{path}: expected {schema}, got {value!r}")


def validate_rayjob(models, obj: dict[str, Any]) -> None:
    errors: list[str] = []
    if obj.get("apiVersion") != "ray.io/v1" or obj.get("kind") != "RayJob":
        errors.append("apiVersion/kind: expected ray.io/v1 RayJob")
    extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        errors.append(f"top-level fields {sorted(extra)}")
    try:
        validate_core(models, {"metadata": obj.get("metadata", {})}, "V1PodTemplateSpec")
    except ValueError as exc:
        errors.append(f"/metadata: {exc}")
    spec = obj.get("spec", {})
    _check(models, spec, RAYJOB_SPEC, "/spec", errors)
    if spec.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
        errors.append(f"/spec/submissionMode: one of {sorted(SUBMISSION_MODES)}")
    for i, g in enumerate(spec.get("rayClusterSpec", {}).get("workerGroupSpecs", [])):
        if not g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 2**31):
            errors.append(f"/spec/rayClusterSpec/workerGroupSpecs/{i}: min <= replicas <= max")
    if errors:
        raise ValueError("RayJob: " + "; ".join(errors))


def validate(models, obj: dict[str, Any]) -> None:
    if obj.get("kind") == "RayJob":
        validate_rayjob(models, obj)
    else:
        validate_core(models, obj)
