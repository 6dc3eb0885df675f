"""Content negotiation for API objects: JSON, YAML and meta.k8s.io Tables out; JSON and YAML in.

Bodies are decoded strictly enough to report what Kubernetes reports (malformed input is 400,
unsupported media types 415, duplicate fields are noted for fieldValidation=Strict).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from attrs import frozen

from .discovery import parse_accept
from .status import StatusError

JSON = "application/json"
YAML = "application/yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)

#: kube-apiserver's limit on a request body (3 MiB).
MAX_BODY_BYTES = 3 * 1024 * 1024


@frozen
class Output:
    """How to serialise a response: `json`, `yaml`, or a Table (`table`) encoded as JSON or YAML."""

    form: str
    encoding: str = JSON


def negotiate_output(accept: str | None) -> Output | None:
    """Pick the response form from an Accept header; None when nothing acceptable can be produced (406)."""
    if not accept or not accept.strip():
        return Output("json")
    for media in parse_accept(accept):
        full = f"{media.type}/{media.subtype}"
        if full not in (JSON, YAML, "application/*", "*/*"):
            continue
        encoding = YAML if full == YAML else JSON
        wanted_as = media.params.get("as")
        if wanted_as is None:
            if media.params.get("g") or media.params.get("v"):
                continue
            return Output("json" if encoding == JSON else "yaml", encoding)
        if wanted_as == "Table" and media.params.get("g") == "meta.k8s.io" and media.params.get("v") in ("v1", "v1beta1"):
            return Output("table", encoding)
        # PartialObjectMetadata and other forms are not offered: try the next clause.
    return None


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters such as charset dropped), lower-cased."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


class _NoDatesLoader(yaml.SafeLoader):
    """YAML 1.1 without timestamp resolution, so timestamps stay strings as in JSON."""


_NoDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@frozen
class Decoded:
    """A decoded request body, and the duplicate field names seen while decoding (for fieldValidation)."""

    value: Any
    duplicates: tuple[str, ...] = ()


def decode_json(data: bytes) -> Decoded:
    """Decode JSON, noting duplicate keys; malformed JSON is a 400 with the decoder's message."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError as error:
        raise StatusError(400, f"the request body is not valid UTF-8: {error}", "BadRequest") from None
    except json.JSONDecodeError as error:
        raise StatusError(400, f"couldn't get version/kind; json parse error: {error.msg} at line {error.lineno} column {error.colno}",
                          "BadRequest") from None
    return Decoded(value, tuple(duplicates))


def decode_yaml(data: bytes) -> Decoded:
    """Decode a single YAML document; malformed YAML is a 400."""
    try:
        documents = list(yaml.load_all(data.decode("utf-8"), Loader=_NoDatesLoader))
    except UnicodeDecodeError as error:
        raise StatusError(400, f"the request body is not valid UTF-8: {error}", "BadRequest") from None
    except yaml.YAMLError as error:
        raise StatusError(400, f"error converting YAML to JSON: {error}", "BadRequest") from None
    documents = [d for d in documents if d is not None]
    if len(documents) > 1:
        raise StatusError(400, "the request body holds more than one YAML document", "BadRequest")
    return Decoded(documents[0] if documents else None)


def decode_object(data: bytes, content_type: str | None) -> Decoded:
    """Decode a create/update body by Content-Type (JSON when none is given); other types are 415."""
    kind = media_type(content_type)
    if kind in ("", JSON):
        return decode_json(data)
    if kind in (YAML, "application/x-yaml", "text/yaml"):
        return decode_yaml(data)
    raise StatusError(415, f"the body of the request was in an unknown format - accepted media types include: "
                           f"{JSON}, {YAML}", "UnsupportedMediaType")


def encode(value: Any, encoding: str) -> bytes:
    """Serialise a response body in the negotiated encoding."""
    if encoding == YAML:
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
