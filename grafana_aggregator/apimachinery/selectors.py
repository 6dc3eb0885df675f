"""Label and field selectors with the syntax, validation and error messages of k8s.io/apimachinery.

`parse_label_selector` follows `labels.Parse`, `parse_field_selector` follows `fields.ParseSelector` plus the
field-label check a list handler makes, and `label_selector_from_json` follows `metav1.LabelSelectorAsSelector`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from attrs import field, frozen

from grafana_aggregator.apimachinery.gotypes import go_quote
from grafana_aggregator.apimachinery.status import StatusError

# Operators, spelled as k8s.io/apimachinery/pkg/selection spells them.
IN = "in"
NOT_IN = "notin"
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)

_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE = re.compile(_LABEL_KEY_FMT)
_LABEL_KEY_ERR = ("must consist of alphanumeric characters, '-', '_' or '.', "
                  "and must start and end with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_LABEL_KEY_FMT})?"
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_ERR = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_ERR = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                          "and must start and end with an alphanumeric character")
_MAX_LABEL_LENGTH = 63
_MAX_SUBDOMAIN_LENGTH = 253
_INT64 = re.compile(r"[+-]?[0-9]+")

def _regex_error(message: str, regex: str, *examples: str) -> str:
    """content.RegexError: the message, its examples and the regular expression."""
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{regex}')"


def _max_len_error(length: int) -> str:
    """content.MaxLenError."""
    return f"must be no more than {length} bytes"


def label_key_errors(key: str) -> list[str]:
    """What is wrong with a label key (content.IsLabelKey); empty when it is valid."""
    return list(_label_key_errors(key))


@functools.lru_cache(maxsize=256)
def _label_key_errors(key: str) -> tuple[str, ...]:
    return tuple(_key_errors(key))


def _key_errors(key: str) -> list[str]:
    parts = key.split("/")
    errors: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + e for e in _dns1123_subdomain_errors(prefix))
    else:
        return ["a valid label key " + _regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name.encode("utf-8")) > _MAX_LABEL_LENGTH:
        errors.append("name part " + _max_len_error(_MAX_LABEL_LENGTH))
    if not _LABEL_KEY_RE.fullmatch(name):
        errors.append("name part " + _regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errors


def label_value_errors(value: str) -> list[str]:
    """What is wrong with a label value (content.IsLabelValue); empty when it is valid."""
    return list(_label_value_errors(value))


@functools.lru_cache(maxsize=256)
def _label_value_errors(value: str) -> tuple[str, ...]:
    return tuple(_value_errors(value))


def _value_errors(value: str) -> list[str]:
    errors: list[str] = []
    if len(value.encode("utf-8")) > _MAX_LABEL_LENGTH:
        errors.append(_max_len_error(_MAX_LABEL_LENGTH))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(_regex_error(_LABEL_VALUE_ERR, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


def _dns1123_subdomain_errors(value: str) -> list[str]:
    """content.IsDNS1123Subdomain."""
    errors: list[str] = []
    if len(value.encode("utf-8")) > _MAX_SUBDOMAIN_LENGTH:
        errors.append(_max_len_error(_MAX_SUBDOMAIN_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errors.append(_regex_error(_DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errors


def _invalid(path: str, value: str, details: list[str]) -> str:
    """A field.Invalid error with a string value, as Error() prints it."""
    return f"{path}: Invalid value: {go_quote(value)}: {'; '.join(details)}"


def _invalid_json(path: str, value: Any, detail: str) -> str:
    """A field.Invalid error with a non-string value, which Go prints as JSON."""
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return f"{path}: Invalid value: {encoded}: {detail}"


def _aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message bare, several de-duplicated in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


@frozen
class Requirement:
    """One requirement of a label selector: a key, an operator and its values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this requirement (labels.Requirement.Matches)."""
        present = self.key in labels
        if self.operator in (IN, EQUALS, DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if self.operator in (GREATER_THAN, LESS_THAN):
            if not present or len(self.values) != 1:
                return False
            actual, wanted = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
            if actual is None or wanted is None:
                return False
            return actual > wanted if self.operator == GREATER_THAN else actual < wanted
        return False

    def __str__(self) -> str:
        """The requirement in selector syntax, values sorted, as Requirement.String writes it."""
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        values = ",".join(sorted(self.values))
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({values})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{values}"


def _parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), or None when Go would fail."""
    digits = text.lstrip("+-").lstrip("0") or "0"
    if not _INT64.fullmatch(text) or len(digits) > 19:
        return None  # (more digits than any int64 has: out of range, and never given to int())
    number = -int(digits) if text.startswith("-") else int(digits)
    return number if -(2 ** 63) <= number < 2 ** 63 else None


class _LabelPlan:
    """A label selector's requirements merged per key, so that matching an object costs time in proportion to its
    own labels, however many terms (or `in` values) the selector has: set operations in C for the keys that must
    or must not be there, then one look-up per label that must have (or must not have) certain values."""

    __slots__ = ("never", "required", "absent", "allowed", "forbidden", "bounds")

    def __init__(self, requirements: Iterable[Requirement]):
        self.never = False
        required: set[str] = set()
        self.absent: frozenset[str] = frozenset()
        allowed: dict[str, frozenset[str]] = {}
        self.forbidden: dict[str, frozenset[str]] = {}
        bounds: dict[str, tuple[int, int]] = {}
        absent: set[str] = set()
        for r in requirements:
            if r.operator == EXISTS:
                required.add(r.key)
            elif r.operator == DOES_NOT_EXIST:
                absent.add(r.key)
            elif r.operator in (IN, EQUALS, DOUBLE_EQUALS):
                values = frozenset(r.values)
                allowed[r.key] = allowed[r.key] & values if r.key in allowed else values
                required.add(r.key)
            elif r.operator in (NOT_IN, NOT_EQUALS):
                self.forbidden[r.key] = self.forbidden.get(r.key, frozenset()) | frozenset(r.values)
            elif r.operator in (GREATER_THAN, LESS_THAN):
                wanted = _parse_int64(r.values[0]) if len(r.values) == 1 else None
                if wanted is None:
                    self.never = True
                    continue
                low, high = bounds.get(r.key, (-(2 ** 63) - 1, 2 ** 63))
                bounds[r.key] = (max(low, wanted), high) if r.operator == GREATER_THAN else (low, min(high, wanted))
                required.add(r.key)
            else:
                self.never = True
        self.required = frozenset(required)
        self.absent = frozenset(absent)
        self.allowed = tuple(allowed.items())
        self.bounds = tuple((key, low, high) for key, (low, high) in bounds.items())
        if required & absent or any(not values for values in allowed.values()):
            self.never = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.never:
            return False
        keys = labels.keys()
        if self.required and not keys >= self.required:
            return False
        if self.absent and not keys.isdisjoint(self.absent):
            return False
        for key, values in self.allowed:
            if labels[key] not in values:
                return False
        forbidden = self.forbidden
        if forbidden:
            if len(forbidden) <= len(labels):
                for key, values in forbidden.items():
                    if key in labels and labels[key] in values:
                        return False
            else:
                for key, value in labels.items():
                    if key in forbidden and value in forbidden[key]:
                        return False
        for key, low, high in self.bounds:
            number = _parse_int64(labels[key])
            if number is None or not low < number < high:
                return False
        return True


@frozen
class LabelSelector:
    """A parsed label selector: all requirements must match; `nothing` selects no object at all."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False
    _plan: _LabelPlan = field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_plan", _LabelPlan(self.requirements))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected."""
        return not self.nothing and self._plan.matches(labels)

    def is_empty(self) -> bool:
        """Whether the selector selects everything."""
        return not self.nothing and not self.requirements

    def __str__(self) -> str:
        """The canonical selector string (requirements sorted by key)."""
        return ",".join(str(r) for r in self.requirements)


def new_requirement(key: str, operator: str, values: Iterable[str], *, path: str = "") -> Requirement:
    """A validated requirement, as labels.NewRequirement builds it; errors are ValueError with kube's text.

    `path` is the field path errors are reported under ("" reports `key`, `values[0][k]`, ...).
    """
    vals = list(values)
    errors: list[str] = []
    key_path = f"{path}.key" if path else "key"
    values_path = f"{path}.values" if path else "values"
    key_errors = label_key_errors(key)
    if key_errors:
        errors.append(_invalid(key_path, key, key_errors))
    bad_values = vals or None  # Go prints an empty values slice built with append(nil, ...) as null
    if operator in (IN, NOT_IN):
        if not vals:
            errors.append(_invalid_json(values_path, bad_values,
                                        "for 'in', 'notin' operators, values set can't be empty"))
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(vals) != 1:
            errors.append(_invalid_json(values_path, bad_values, "exact-match compatibility requires one single value"))
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if vals:
            errors.append(_invalid_json(values_path, vals, "values set must be empty for exists and does not exist"))
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(vals) != 1:
            errors.append(_invalid_json(values_path, bad_values,
                                        "for 'Gt', 'Lt' operators, exactly one value is required"))
        for i, value in enumerate(vals):
            if _parse_int64(value) is None:
                errors.append(_invalid(f"{values_path}[{i}]", value,
                                       ["for 'Gt', 'Lt' operators, the value must be an integer"]))
    else:
        supported = ", ".join(go_quote(op) for op in (*_BINARY_OPERATORS, EXISTS, DOES_NOT_EXIST))
        errors.append(f"{path + '.operator' if path else 'operator'}: Unsupported value: {go_quote(operator)}: "
                      f"supported values: {supported}")
    for i, value in enumerate(vals):
        value_errors = label_value_errors(value)
        if value_errors:
            errors.append(_invalid(f"{values_path}[{i}][{key}]", value, value_errors))
    if errors:
        raise ValueError(_aggregate(errors))
    return Requirement(key, operator, tuple(vals))


# --- the label selector lexer and parser (labels.Lexer / labels.Parser) ---

_END, _CLOSE, _COMMA, _NOT, _DOUBLE_EQUALS, _EQUALS, _GT, _ID, _IN, _LT, _NOT_EQUALS, _NOT_IN, _OPEN, _ERROR = range(14)

_TOKENS = {")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DOUBLE_EQUALS, "=": _EQUALS, ">": _GT, "in": _IN,
           "<": _LT, "!=": _NOT_EQUALS, "notin": _NOT_IN, "(": _OPEN}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_END_CHAR = "\x00"


#: One token of a selector: whitespace, then a run of operator characters or an identifier (or the end).
_TOKEN_RE = re.compile(r"[ \t\r\n]*(?:([=!(),><]+)|([^=!(),>< \t\r\n]+))?")


def _lex(text: str) -> list[tuple[int, str]]:
    """Every token of the selector, ending with the end-of-string token: by regular expression (a selector of
    thousands of terms takes milliseconds), or character by character as Go reads it when the text holds a NUL
    (which Go's lexer takes for the end of the string)."""
    if "\x00" in text:
        return _lex_slowly(text)
    items: list[tuple[int, str]] = []
    position = 0
    match = _TOKEN_RE.match
    while True:
        found = match(text, position)
        assert found is not None
        special, identifier = found.group(1), found.group(2)
        if identifier is not None:
            items.append((_TOKENS.get(identifier, _ID), identifier))
            position = found.end()
        elif special is not None:
            # The longest operator that every shorter prefix is also one of: `!=` and `==`, else one character.
            token = special[:2] if special[:2] in ("!=", "==") else special[0]
            items.append((_TOKENS[token], token))
            position = found.start(1) + len(token)
        else:
            items.append((_END, ""))
            return items


def _lex_slowly(text: str) -> list[tuple[int, str]]:
    """Every token of the selector, ending with the end-of-string token."""
    items: list[tuple[int, str]] = []
    pos = 0

    def read() -> str:
        nonlocal pos
        if pos < len(text):
            pos += 1
            return text[pos - 1]
        return _END_CHAR

    while True:
        ch = read()
        while ch in _WHITESPACE:
            ch = read()
        if ch == _END_CHAR:
            items.append((_END, ""))
            return items
        pos -= 1
        buffer = ""
        if ch in _SPECIAL:
            last: tuple[int, str] | None = None
            while True:
                ch = read()
                if ch == _END_CHAR:
                    break
                if ch not in _SPECIAL:
                    pos -= 1
                    break
                buffer += ch
                if buffer in _TOKENS:
                    last = (_TOKENS[buffer], buffer)
                elif last is not None:
                    pos -= 1
                    break
            items.append(last if last is not None else (_ERROR, f"error expected: keyword found '{buffer}'"))
        else:
            while True:
                ch = read()
                if ch == _END_CHAR:
                    break
                if ch in _SPECIAL or ch in _WHITESPACE:
                    pos -= 1
                    break
                buffer += ch
            items.append((_TOKENS.get(buffer, _ID), buffer))


class _ParseError(Exception):
    """A label selector syntax or validation error, with kube's message."""


class _Parser:
    """A recursive-descent parser over the scanned tokens, with kube's lookahead rules."""

    def __init__(self, text: str):
        self.items = _lex(text)
        self.position = 0

    def lookahead(self, values: bool) -> tuple[int, str]:
        """The current token; `in`/`notin` read as identifiers in a values context."""
        token, literal = self.items[self.position]
        return (_ID, literal) if values and token in (_IN, _NOT_IN) else (token, literal)

    def consume(self, values: bool) -> tuple[int, str]:
        """The current token, moving past it."""
        result = self.lookahead(values)
        self.position += 1
        return result

    def parse(self) -> list[Requirement]:
        """All requirements, in the order written."""
        requirements: list[Requirement] = []
        while True:
            token, literal = self.lookahead(True)
            if token in (_ID, _NOT):
                try:
                    requirements.append(self.requirement())
                except _ParseError as e:
                    raise _ParseError(f"unable to parse requirement: {e}") from None
                token, literal = self.consume(True)
                if token == _END:
                    return requirements
                if token == _COMMA:
                    after, after_literal = self.lookahead(True)
                    if after not in (_ID, _NOT):
                        raise _ParseError(f"found '{after_literal}', expected: identifier after ','")
                else:
                    raise _ParseError(f"found '{literal}', expected: ',' or 'end of string'")
            elif token == _END:
                return requirements
            else:
                raise _ParseError(f"found '{literal}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        """One requirement: [!]KEY [operator values]."""
        operator = ""
        token, literal = self.consume(True)
        if token == _NOT:
            operator = DOES_NOT_EXIST
            token, literal = self.consume(True)
        if token != _ID:
            raise _ParseError(f"found '{literal}', expected: identifier")
        key_errors = label_key_errors(literal)
        if key_errors:
            raise _ParseError(_invalid("<nil>", literal, key_errors))
        key = literal
        if self.lookahead(True)[0] in (_END, _COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        if operator in (EXISTS, DOES_NOT_EXIST):
            return self.validated(key, operator, [])
        operator = self.operator()
        values = self.set_values() if operator in (IN, NOT_IN) else self.exact_value()
        return self.validated(key, operator, sorted(values))

    @staticmethod
    def validated(key: str, operator: str, values: list[str]) -> Requirement:
        """new_requirement, its ValueError turned into a parse error."""
        try:
            return new_requirement(key, operator, values)
        except ValueError as e:
            raise _ParseError(str(e)) from None

    def operator(self) -> str:
        """A binary operator."""
        token, literal = self.consume(False)
        operators = {_IN: IN, _EQUALS: EQUALS, _DOUBLE_EQUALS: DOUBLE_EQUALS, _GT: GREATER_THAN,
                     _LT: LESS_THAN, _NOT_IN: NOT_IN, _NOT_EQUALS: NOT_EQUALS}
        if token not in operators:
            raise _ParseError(f"found '{literal}', expected: {', '.join(_BINARY_OPERATORS)}")
        return operators[token]

    def set_values(self) -> set[str]:
        """The parenthesised value list of `in`/`notin`."""
        token, literal = self.consume(True)
        if token != _OPEN:
            raise _ParseError(f"found '{literal}' expected: '('")
        token, literal = self.lookahead(True)
        if token in (_ID, _COMMA):
            values = self.identifiers()
            if self.consume(True)[0] != _CLOSE:
                raise _ParseError(f"found '{literal}', expected: ')'")
            return values
        if token == _CLOSE:
            self.consume(True)
            return {""}
        raise _ParseError(f"found '{literal}', expected: ',', ')' or identifier")

    def identifiers(self) -> set[str]:
        """A comma-separated list of possibly empty identifiers, up to the closing parenthesis."""
        values: set[str] = set()
        while True:
            token, literal = self.consume(True)
            if token == _ID:
                values.add(literal)
                after, after_literal = self.lookahead(True)
                if after == _COMMA:
                    continue
                if after == _CLOSE:
                    return values
                raise _ParseError(f"found '{after_literal}', expected: ',' or ')'")
            if token == _COMMA:
                if not values:
                    values.add("")
                after = self.lookahead(True)[0]
                if after == _CLOSE:
                    values.add("")
                    return values
                if after == _COMMA:
                    values.add("")
            else:
                raise _ParseError(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        """The single, possibly empty, value of `=`, `==`, `!=`, `>` and `<`."""
        if self.lookahead(True)[0] in (_END, _COMMA):
            return {""}
        token, literal = self.consume(True)
        if token == _ID:
            return {literal}
        raise _ParseError(f"found '{literal}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a `labelSelector` query parameter; errors are StatusError(400, kube's message, "BadRequest")."""
    try:
        requirements = _Parser(text).parse()
    except _ParseError as e:
        raise StatusError(400, str(e), "BadRequest") from None
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


def label_selector_from_json(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector object as a selector (LabelSelectorAsSelector): None selects nothing, {} everything.

    Invalid selectors raise StatusError(400, kube's message, "BadRequest"); callers validating an object may
    re-raise the message as they need.
    """
    if selector is None:
        return LabelSelector(nothing=True)
    if not isinstance(selector, Mapping):
        raise StatusError(400, "label selector must be an object", "BadRequest")
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not all(isinstance(v, str) for v in match_labels.values()):
        raise StatusError(400, "matchLabels must be a map of strings", "BadRequest")
    if not isinstance(expressions, list) or not all(isinstance(e, Mapping) for e in expressions):
        raise StatusError(400, "matchExpressions must be a list of objects", "BadRequest")
    operators = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}
    requirements: list[Requirement] = []
    try:
        for key in sorted(match_labels):
            requirements.append(new_requirement(key, EQUALS, [match_labels[key]]))
        for expression in expressions:
            operator = expression.get("operator", "")
            if operator not in operators:
                raise ValueError(f"{go_quote(str(operator))} is not a valid label selector operator")
            values = expression.get("values") or []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError("matchExpressions values must be a list of strings")
            requirements.append(new_requirement(str(expression.get("key", "")), operators[operator], values))
    except ValueError as e:
        raise StatusError(400, str(e), "BadRequest") from None
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


# --- field selectors (fields.ParseSelector) ---

@frozen
class FieldRequirement:
    """`field=value` (operator "=") or `field!=value` (operator "!=")."""

    field: str
    operator: str
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether the fields satisfy this term; a missing field counts as the empty string."""
        equal = fields.get(self.field, "") == self.value
        return equal if self.operator == EQUALS else not equal


class _FieldPlan:
    """A field selector's terms merged per field: the one value each field must have and the values it must not,
    so that matching costs one look-up per field however many terms the selector has."""

    __slots__ = ("never", "equal", "unequal")

    def __init__(self, requirements: Iterable[FieldRequirement]):
        self.never = False
        equal: dict[str, str] = {}
        unequal: dict[str, set[str]] = {}
        for r in requirements:
            if r.operator == EQUALS:
                if equal.setdefault(r.field, r.value) != r.value:
                    self.never = True
            else:
                unequal.setdefault(r.field, set()).add(r.value)
        self.equal = tuple(equal.items())
        self.unequal = tuple((name, frozenset(values)) for name, values in unequal.items())

    def matches(self, fields: Mapping[str, str]) -> bool:
        if self.never:
            return False
        for name, value in self.equal:
            if fields.get(name, "") != value:
                return False
        for name, values in self.unequal:
            if fields.get(name, "") in values:
                return False
        return True


@frozen
class FieldSelector:
    """A parsed field selector: every term must match."""

    requirements: tuple[FieldRequirement, ...] = ()
    _plan: _FieldPlan = field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_plan", _FieldPlan(self.requirements))

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether an object with these selectable fields is selected."""
        return self._plan.matches(fields)

    def is_empty(self) -> bool:
        """Whether the selector selects everything."""
        return not self.requirements

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal, if the selector has a `field=value` term."""
        for requirement in self.requirements:
            if requirement.field == field and requirement.operator == EQUALS:
                return requirement.value
        return None

    def __str__(self) -> str:
        """The selector with values escaped, as fields.Selector.String writes it."""
        return ",".join(f"{r.field}{r.operator}{escape_field_value(r.value)}" for r in self.requirements)


def escape_field_value(value: str) -> str:
    """fields.EscapeValue: backslash-escape `\\`, `,` and `=`."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    """fields.UnescapeValue, raising ValueError with kube's message."""
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise ValueError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise ValueError(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise ValueError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


#: The first operator of a field selector term (`!=` before `==` before `=` at the same place).
_FIELD_OPERATOR = re.compile("!=|==|=")


def _split_terms(text: str) -> list[str]:
    """The selector split at commas not escaped by a backslash."""
    if not text:
        return []
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def parse_field_selector(text: str, allowed: Collection[str]) -> FieldSelector:
    """Parse a `fieldSelector` query parameter against the fields the resource supports.

    Syntax errors and unsupported field labels are StatusError(400, kube's message, "BadRequest").
    """
    requirements: list[FieldRequirement] = []
    try:
        for term in sorted(_split_terms(text)):
            if not term:
                continue
            found = _FIELD_OPERATOR.search(term)
            if found is None:
                raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
            i, operator = found.start(), found.group()
            value = _unescape_field_value(term[i + len(operator):])
            requirements.append(FieldRequirement(term[:i], NOT_EQUALS if operator == "!=" else EQUALS, value))
    except ValueError as e:
        raise StatusError(400, str(e), "BadRequest") from None
    for requirement in requirements:
        if requirement.field not in allowed:
            raise StatusError(400, f"field label not supported: {requirement.field}", "BadRequest")
    return FieldSelector(tuple(requirements))
