"""A small kustomize renderer for the features cluster/k8s uses, for machines without kubectl.

Supported kustomization keys: ``resources`` (files and folders), ``namespace``, ``labels``
(``pairs``, ``includeSelectors: false``, ``includeTemplates``), ``images`` (``newName``,
``newTag``), ``configMapGenerator`` (``literals``; ``behavior`` create or merge),
``generatorOptions.disableNameSuffixHash: true`` and ``patches`` with a ``target`` and an
RFC 6902 JSON patch. Anything else raises :class:`Unsupported`, so a kustomization that
outgrows this renderer fails loudly instead of rendering differently. When ``kubectl`` is on
PATH, tests/cluster/test_k8s_manifests.py checks that both renderers give the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "configMapGenerator",
    "generatorOptions", "patches",
}  # fmt: skip
TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Unsupported(ValueError):
    pass


def render(folder: str | Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize FOLDER`` would print (in no particular order)."""
    folder = Path(folder)
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    extra = set(k) - KNOWN
    if extra:
        raise Unsupported(f"{folder}: kustomization keys {sorted(extra)}")
    objs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        p = folder / res
        if p.is_dir():
            objs += render(p)
        else:
            objs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    opts = k.get("generatorOptions", {})
    if opts and opts != {"disableNameSuffixHash": True}:
        raise Unsupported(f"{folder}: generatorOptions {opts}")
    for gen in k.get("configMapGenerator", []):
        if set(gen) - {"name", "literals", "behavior"} or not (opts or gen.get("behavior")):
            raise Unsupported(f"{folder}: configMapGenerator {gen} (literals, no hash suffix)")
        data = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": gen["name"]}, "data": data})  # fmt: skip
        elif behavior == "merge":
            (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and _name(o) == gen["name"]]
            cm.setdefault("data", {}).update(data)
        else:
            raise Unsupported(f"{folder}: configMapGenerator behavior {behavior}")
    for patch in k.get("patches", []):
        if set(patch) != {"target", "patch"}:
            raise Unsupported(f"{folder}: patch {patch} (target + JSON patch only)")
        ops = yaml.safe_load(patch["patch"])
        hits = [o for o in objs if _matches(o, patch["target"])]
        if not hits:
            raise ValueError(f"{folder}: patch target {patch['target']} matches nothing")
        for o in hits:
            for op in ops:
                _apply(o, op)
    for img in k.get("images", []):
        for o in objs:
            _set_images(o, img)
    for lab in k.get("labels", []):
        if lab.get("includeSelectors"):
            raise Unsupported(f"{folder}: labels with includeSelectors")
        for o in objs:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(lab["pairs"])
            if lab.get("includeTemplates") and o["kind"] in TEMPLATED:
                tmeta = o["spec"]["template"].setdefault("metadata", {})
                tmeta.setdefault("labels", {}).update(lab["pairs"])
    if "namespace" in k:
        for o in objs:
            o["metadata"]["namespace"] = k["namespace"]
    return objs


def _name(o: dict) -> str:
    return o["metadata"]["name"]


def _matches(o: dict, target: dict) -> bool:
    group, _, version = o["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": o["kind"], "name": _name(o)}
    extra = set(target) - set(want)
    if extra:
        raise Unsupported(f"patch target keys {sorted(extra)}")
    return all(want[key] == v for key, v in target.items())


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _apply(doc: dict, op: dict) -> None:
    """One RFC 6902 operation (add, replace, remove), in place."""
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            return
        idx = int(last)
        if not 0 <= idx < len(node):
            raise ValueError(f"{op['path']}: no such element")
        if kind == "replace":
            node[idx] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[idx]
        else:
            raise Unsupported(f"JSON patch op {kind}")
        return
    if kind in ("replace", "remove") and last not in node:
        raise ValueError(f"{op['path']}: no such member")
    if kind in ("add", "replace"):
        node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[last]
    else:
        raise Unsupported(f"JSON patch op {kind}")


def _set_images(node: Any, img: dict) -> None:
    if isinstance(node, dict):
        for key, val in node.items():
            if key in ("containers", "initContainers") and isinstance(val, list):
                for c in val:
                    name, _, tag = c.get("image", "").partition(":")
                    if name == img["name"]:
                        tag = img.get("newTag", tag)
                        c["image"] = img.get("newName", name) + (f":{tag}" if tag else "")
            else:
                _set_images(val, img)
    elif isinstance(node, list):
        for v in node:
            _set_images(v, img)
