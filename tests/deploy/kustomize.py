"""Just enough of kustomize to render deploy/kubernetes offline, in-process.

The real kustomize (``kubectl kustomize``) is not in Debian's packages for this
machine's release, so CI could not count on it. This renders the subset our
kustomizations use, and refuses any field it does not implement, so a new
kustomization cannot be half-rendered in silence: ``resources`` (files and
directories with their own kustomization), ``namespace``, ``labels`` (metadata
only, as kustomize does without ``includeSelectors``), ``images`` and ``patches``
(strategic merge by kind and name; lists of named items merge by name, like
containers and env). Where kubectl is on PATH the test compares the two.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
RESOURCES_MAX = 100  # a bound on the walk: no kustomization of ours comes near it


def render(directory: Path, depth: int = 0) -> list[Object]:
    assert depth < 5, f"{directory}: kustomizations nested too deep"
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    assert not unknown, f"{directory}: kustomization fields this renderer lacks: {unknown}"
    objects: list[Object] = []
    for entry in spec.get("resources", [])[:RESOURCES_MAX]:
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path, depth + 1)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for patch_entry in spec.get("patches", []):
        assert set(patch_entry) == {"path"}, f"{directory}: only file patches: {patch_entry}"
        for patch in yaml.safe_load_all((directory / patch_entry["path"]).read_text()):
            _apply_patch(objects, patch, directory)
    for pairs in spec.get("labels", []):
        assert set(pairs) == {"pairs"}, f"{directory}: labels take pairs only: {pairs}"
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs["pairs"])
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _apply_patch(objects: list[Object], patch: Object, directory: Path) -> None:
    for obj in objects:
        if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]:
            merged = merge(obj, patch)
            obj.clear()
            obj.update(merged)
            return
    raise AssertionError(f"{directory}: patch matches nothing: {patch['kind']}")


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge: maps merge key by key, lists of named maps by name, and
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if _named(base) and _named(patch):
        out = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _set_image(obj: Object, image: Object) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name = container["image"].partition(":")[0]
        if name == image["name"]:
            new_name = image.get("newName", name)
            container["image"] = f"{new_name}:{image['newTag']}" if "newTag" in image else new_name
