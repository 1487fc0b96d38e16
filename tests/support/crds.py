"""The Dynatrace Operator's CRDs (tests/data/dynatrace-crds/) as strict JSON Schema: validate emitted
DynaKube/EdgeConnect documents as ``kubectl --validate=strict`` would."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).parent.parent / "data" / "dynatrace-crds"


@functools.cache
def crd(name: str) -> dict[str, Any]:
    document = yaml.safe_load((CRDS / name).read_text("utf-8"))
    assert isinstance(document, dict)
    return document


def served(document: dict[str, Any]) -> list[str]:
    return [v["name"] for v in document["spec"]["versions"] if v["served"]]


def strict_schema(node: Any) -> Any:
    """A Kubernetes structural schema as JSON Schema: x-kubernetes-* keys dropped (int-or-string
    becomes integer|string, preserve-unknown-fields keeps the object open), ``nullable`` allows
    null, and every other object is closed, as ``kubectl --validate=strict`` does:
    a field the Operator does not know fails instead of being pruned silently."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    closable = node.get("type") == "object" or "properties" in node
    if closable and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def validate(document: dict[str, Any], crd_name: str) -> None:
    group, _, version = document["apiVersion"].partition("/")
    definition = crd(crd_name)
    assert group == definition["spec"]["group"] and document["kind"] == definition["spec"]["names"]["kind"]
    assert version in served(definition), f"{document['apiVersion']} is not served by {crd_name}"
    (entry,) = [v for v in definition["spec"]["versions"] if v["name"] == version]
    schema = strict_schema(entry["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server itself
    jsonschema.Draft202012Validator(schema).validate(document)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]
