# -*- test-case-name: tests.test_validation -*-
"""Kubernetes name and object-metadata validation, with the exact messages of k8s.io/apimachinery.

Mirrors pkg/util/validation, pkg/api/validate/content and pkg/api/validation (ValidateObjectMeta,
ValidateObjectMetaUpdate); string checks return kube's detail strings, metadata checks return FieldErrors.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .strategy import parse_time
from .fielderrors import FieldError, forbidden, go_value, invalid, required, too_long

#: A ValidateNameFunc: (name, prefix) → detail strings; prefix is true for generateName.
NameValidator = Callable[[str, bool], list[str]]

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_ERR = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                     "must start and end with an alphanumeric character")
DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_ERR = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character")
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1035_LABEL_ERR = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                     "alphabetic character, and end with an alphanumeric character")
DNS1035_LABEL_MAX_LENGTH = 63
LABEL_KEY_CHAR_FMT = "[A-Za-z0-9]"
LABEL_KEY_EXT_CHAR_FMT = "[-A-Za-z0-9_.]"
LABEL_KEY_FMT = "(" + LABEL_KEY_CHAR_FMT + LABEL_KEY_EXT_CHAR_FMT + "*)?" + LABEL_KEY_CHAR_FMT
LABEL_KEY_ERR = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character")
LABEL_KEY_MAX_LENGTH = 63
LABEL_VALUE_FMT = "(" + LABEL_KEY_FMT + ")?"
LABEL_VALUE_ERR = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character")
LABEL_VALUE_MAX_LENGTH = 63
IP_INVALID = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
#: pkg/api/validation: the message of ValidateImmutableField.
FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"
#: 256 KiB: the limit on the summed length of all annotation keys and values.
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * (1 << 10)
FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"

_DNS1123_LABEL = re.compile(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = re.compile(DNS1035_LABEL_FMT)
_LABEL_KEY = re.compile(LABEL_KEY_FMT)
_LABEL_VALUE = re.compile(LABEL_VALUE_FMT)
_SLOPPY_IPV4 = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")


def _size(value: str) -> int:
    """Go's len(): the UTF-8 byte length."""
    return len(value.encode("utf-8", "surrogatepass"))


def max_len_error(length: int) -> str:
    """util/validation.MaxLenError (DNS names count "characters")."""
    return f"must be no more than {length} characters"


def max_bytes_error(length: int) -> str:
    """validate/content.MaxLenError (label keys and values count "bytes" since Kubernetes 1.35)."""
    return f"must be no more than {length} bytes"


def regex_error(message: str, fmt: str, *examples: str) -> str:
    """RegexError: the message, the examples and the regex used."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}'" for example in examples)
    return f"{message} (e.g. {shown}, regex used for validation is '{fmt}')"


def _dns1123_subdomain(value: str, too_long_message: Callable[[int], str]) -> list[str]:
    errors = []
    if _size(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(too_long_message(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errors


def is_dns1123_subdomain(value: str) -> list[str]:
    """IsDNS1123Subdomain: lower-case RFC 1123 subdomain of at most 253 characters."""
    return _dns1123_subdomain(value, max_len_error)


def is_dns1123_label(value: str) -> list[str]:
    """IsDNS1123Label: lower-case RFC 1123 label of at most 63 characters."""
    errors = []
    if _size(value) > DNS1123_LABEL_MAX_LENGTH:
        errors.append(max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL.fullmatch(value):
        if _DNS1123_SUBDOMAIN.fullmatch(value):
            # A valid subdomain but not a label: with the length checked, it must be the dots.
            errors.append("must not contain dots")
        else:
            errors.append(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errors


def is_dns1035_label(value: str) -> list[str]:
    """IsDNS1035Label: like a DNS-1123 label but starting with a letter."""
    errors = []
    if _size(value) > DNS1035_LABEL_MAX_LENGTH:
        errors.append(max_len_error(DNS1035_LABEL_MAX_LENGTH))
    if not _DNS1035_LABEL.fullmatch(value):
        errors.append(regex_error(DNS1035_LABEL_ERR, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errors


def is_qualified_name(value: str) -> list[str]:
    """IsQualifiedName / content.IsLabelKey: `[prefix/]name`, the form of label and annotation keys."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + message for message in _dns1123_subdomain(prefix, max_bytes_error))
    else:
        return ["a valid label key " + regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    elif _size(name) > LABEL_KEY_MAX_LENGTH:
        errors.append("name part " + max_bytes_error(LABEL_KEY_MAX_LENGTH))
    if not _LABEL_KEY.fullmatch(name):
        errors.append("name part " + regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errors


def is_valid_label_value(value: str) -> list[str]:
    """IsValidLabelValue: empty, or at most 63 alphanumerics, '-', '_' or '.' with alphanumeric ends."""
    errors = []
    if _size(value) > LABEL_VALUE_MAX_LENGTH:
        errors.append(max_bytes_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


def is_path_segment_prefix(name: str) -> list[str]:
    """IsPathSegmentPrefix: no '/' and no '%' (a prefix may still be '.' or '..')."""
    return [f"may not contain '{bad}'" for bad in ("/", "%") if bad in name]


def is_path_segment_name(name: str) -> list[str]:
    """IsPathSegmentName: a name that can be a URL path segment and a storage key (not '.', '..', no '/', '%')."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return is_path_segment_prefix(name)


def is_ip(value: str) -> list[str]:
    """IsValidIP (strict): an IPv4 or IPv6 address in canonical form, no leading 0s, not IPv4-mapped IPv6."""
    try:
        if "%" in value:
            raise ValueError("zones are not IP addresses")
        address = ipaddress.ip_address(value)
    except ValueError:
        sloppy = _SLOPPY_IPV4.fullmatch(value)
        if sloppy and all(int(part) <= 255 for part in sloppy.groups()):
            return ["must not have leading 0s"]
        return [IP_INVALID]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return ["must not be an IPv4-mapped IPv6 address"]
    if value != str(address):
        return [f"must be in canonical form ({go_value(str(address))})"]
    return []


def mask_trailing_dash(name: str) -> str:
    """maskTrailingDash: a generateName may end in '-' since a suffix follows it."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    """NameIsDNSSubdomain, the ValidateNameFunc of most kube kinds and of custom resources."""
    return is_dns1123_subdomain(mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    """NameIsDNSLabel, the ValidateNameFunc of namespaces."""
    return is_dns1123_label(mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    """NameIsDNS1035Label, the ValidateNameFunc of services."""
    return is_dns1035_label(mask_trailing_dash(name) if prefix else name)


def validate_path_segment_name(name: str, prefix: bool) -> list[str]:
    """ValidatePathSegmentName, the weakest ValidateNameFunc: what any stored object's name must satisfy."""
    return is_path_segment_prefix(name) if prefix else is_path_segment_name(name)


#: ValidateNamespaceName: namespaces are DNS-1123 labels.
validate_namespace_name = name_is_dns_label


def type_invalid(path: str, value: Any, expected: str) -> FieldError:
    """field.TypeInvalid, for JSON values of the wrong type (kube would fail to decode them)."""
    return FieldError("FieldValueTypeInvalid", path, f"Invalid value: {go_json(value)}: must be of type {expected}")


def go_json(value: Any) -> str:
    """A bad value as field.Error prints it: Go-quoted scalars, compact JSON for anything else."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return go_value(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _string_map(value: Any, path: str, errors: list[FieldError]) -> dict[str, str]:
    """The entries of a map[string]string field; a wrong type becomes an error and is skipped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(type_invalid(path, value, "object"))
        return {}
    result = {}
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(type_invalid(f"{path}[{key}]", item, "string"))
            continue
        result[key] = item
    return result


def validate_labels(labels: Any, path: str = "metadata.labels") -> list[FieldError]:
    """ValidateLabels: each key a qualified name, each value a label value, errors on the map's own path."""
    errors: list[FieldError] = []
    for key, value in _string_map(labels, path, errors).items():
        errors.extend(invalid(path, key, message) for message in is_qualified_name(key))
        errors.extend(invalid(path, value, message) for message in is_valid_label_value(value))
    return errors


def validate_annotations(annotations: Any, path: str = "metadata.annotations") -> list[FieldError]:
    """ValidateAnnotations: keys are qualified names (case ignored), and keys plus values total ≤ 256 KiB."""
    errors: list[FieldError] = []
    entries = _string_map(annotations, path, errors)
    for key in entries:
        errors.extend(invalid(path, key, message) for message in is_qualified_name(key.lower()))
    if sum(_size(key) + _size(value) for key, value in entries.items()) > TOTAL_ANNOTATION_SIZE_LIMIT:
        errors.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))
    return errors


def _string_list(value: Any, path: str, errors: list[FieldError]) -> list[str]:
    """The items of a []string field; a wrong type becomes an error and is skipped."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(type_invalid(path, value, "array"))
        return []
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            errors.append(type_invalid(f"{path}[{index}]", item, "string"))
            continue
        result.append(item)
    return result


def validate_finalizers(finalizers: Any, path: str = "metadata.finalizers") -> list[FieldError]:
    """ValidateFinalizers: each a qualified name, and not both `orphan` and `foregroundDeletion`."""
    errors: list[FieldError] = []
    names = _string_list(finalizers, path, errors)
    for name in names:
        errors.extend(invalid(path, name, message) for message in is_qualified_name(name))
    if FINALIZER_ORPHAN in names and FINALIZER_FOREGROUND in names:
        errors.append(FieldError("FieldValueInvalid", path, f"Invalid value: {go_json(names)}: finalizer "
                                 f"{FINALIZER_ORPHAN} and {FINALIZER_FOREGROUND} cannot be both set"))
    return errors


def _group_version_ok(api_version: str) -> bool:
    """schema.ParseGroupVersion succeeds and yields a version."""
    parts = api_version.split("/")
    if len(parts) == 1:
        return bool(parts[0])
    return len(parts) == 2 and bool(parts[1])


def validate_owner_references(references: Any, path: str = "metadata.ownerReferences") -> list[FieldError]:
    """ValidateOwnerReferences: apiVersion, kind, name and uid present, apiVersion `<group>/<version>`."""
    errors: list[FieldError] = []
    if references is None:
        return errors
    if not isinstance(references, list):
        return [type_invalid(path, references, "array")]
    for index, reference in enumerate(references):
        item = f"{path}[{index}]"
        if not isinstance(reference, dict):
            errors.append(type_invalid(item, reference, "object"))
            continue
        api_version = reference.get("apiVersion") or ""
        if not api_version:
            errors.append(required(f"{item}.apiVersion", "must not be empty"))
        elif not isinstance(api_version, str) or not _group_version_ok(api_version):
            errors.append(invalid(f"{item}.apiVersion", api_version, "must be <group>/<version> or <version>"))
        for key in ("kind", "name", "uid"):
            if not reference.get(key):
                errors.append(required(f"{item}.{key}", "must not be empty"))
    return errors


def validate_object_meta(meta: Mapping[str, Any], namespaced: bool,
                         name_validator: NameValidator = validate_path_segment_name,
                         path: str = "metadata") -> list[FieldError]:
    """ValidateObjectMeta on create: generateName, name, namespace, generation, labels, annotations, owners, finalizers.

    The REST layer generates the name from generateName before calling this, so an empty name is only
    an error when there is no generateName either.  name_validator is the kind's ValidateNameFunc; the
    default only asks for a valid path segment (kube's storage-key minimum).
    """
    errors: list[FieldError] = []
    generate_name = meta.get("generateName") or ""
    if not isinstance(generate_name, str):
        errors.append(type_invalid(f"{path}.generateName", generate_name, "string"))
        generate_name = ""
    if generate_name:
        errors.extend(invalid(f"{path}.generateName", generate_name, message)
                      for message in name_validator(generate_name, True))
    name = meta.get("name") or ""
    if not isinstance(name, str):
        errors.append(type_invalid(f"{path}.name", name, "string"))
    elif not name:
        if not generate_name:
            errors.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errors.extend(invalid(f"{path}.name", name, message) for message in name_validator(name, False))
    namespace = meta.get("namespace") or ""
    if not isinstance(namespace, str):
        errors.append(type_invalid(f"{path}.namespace", namespace, "string"))
    elif namespaced:
        if not namespace:
            errors.append(required(f"{path}.namespace"))
        else:
            errors.extend(invalid(f"{path}.namespace", namespace, message)
                          for message in validate_namespace_name(namespace, False))
    elif namespace:
        errors.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    generation = meta.get("generation")
    if isinstance(generation, int) and not isinstance(generation, bool) and generation < 0:
        errors.append(invalid(f"{path}.generation", generation, IS_NEGATIVE))
    errors.extend(validate_labels(meta.get("labels"), f"{path}.labels"))
    errors.extend(validate_annotations(meta.get("annotations"), f"{path}.annotations"))
    errors.extend(validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences"))
    errors.extend(validate_finalizers(meta.get("finalizers"), f"{path}.finalizers"))
    return errors


def _time(value: Any) -> Any:
    """A metav1.Time compared semantically: parsed when it is a string, as is otherwise."""
    return parse_time(value) if isinstance(value, str) else value


def _go_string_slice(values: list[str]) -> str:
    """Go's %#v of a []string."""
    return "[]string{" + ", ".join(go_value(value) for value in values) + "}"


def validate_object_meta_update(new_meta: Mapping[str, Any], old_meta: Mapping[str, Any],
                                path: str = "metadata") -> list[FieldError]:
    """ValidateObjectMetaUpdate's immutability rules: no new finalizers while deleting; name, namespace, uid,
    creationTimestamp, deletionTimestamp and deletionGracePeriodSeconds unchanged.

    resourceVersion, generation and the format of labels and annotations are checked elsewhere (the
    REST handler, and validate_object_meta on the new metadata).
    """
    errors: list[FieldError] = []
    if old_meta.get("deletionTimestamp"):
        old_finalizers = set(_string_list(old_meta.get("finalizers"), f"{path}.finalizers", []))
        extra = sorted(set(_string_list(new_meta.get("finalizers"), f"{path}.finalizers", [])) - old_finalizers)
        if extra:
            errors.append(forbidden(f"{path}.finalizers", "no new finalizers can be added if the object is being "
                                                          f"deleted, found new finalizers {_go_string_slice(extra)}"))
    for key in ("name", "namespace", "uid"):
        if (new_meta.get(key) or "") != (old_meta.get(key) or ""):
            errors.append(invalid(f"{path}.{key}", new_meta.get(key) or "", FIELD_IMMUTABLE))
    for key in ("creationTimestamp", "deletionTimestamp"):
        if _time(new_meta.get(key)) != _time(old_meta.get(key)):
            errors.append(invalid(f"{path}.{key}", new_meta.get(key) or None, FIELD_IMMUTABLE))
    if new_meta.get("deletionGracePeriodSeconds") != old_meta.get("deletionGracePeriodSeconds"):
        errors.append(invalid(f"{path}.deletionGracePeriodSeconds", new_meta.get("deletionGracePeriodSeconds"),
                              FIELD_IMMUTABLE))
    return errors
