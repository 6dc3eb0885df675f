"""Label and field selectors with the syntax, validation and error messages of k8s.io/apimachinery.

`parse_label_selector` follows `labels.Parse`, `parse_field_selector` follows `fields.ParseSelector` plus the
field-label check a list handler makes, and `label_selector_from_json` follows `metav1.LabelSelectorAsSelector`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from attrs import frozen

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

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """`text` quoted as Go's `%q` / strconv.Quote quotes a string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _regex_error(message: str, regex: str, *examples: str) -> str:
    """content.RegexError: the message, its examples and the regular expression."""
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{regex}')"


def _max_len_error(length: int) -> str:
    """content.MaxLenError."""
    return f"must be no more than {length} bytes"


def label_key_errors(key: str) -> list[str]:
    """What is wrong with a label key (content.IsLabelKey); empty when it is valid."""
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
    if not _INT64.fullmatch(text):
        return None
    number = int(text)
    return number if -(2 ** 63) <= number < 2 ** 63 else None


@frozen
class LabelSelector:
    """A parsed label selector: all requirements must match; `nothing` selects no object at all."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected."""
        return not self.nothing and all(r.matches(labels) for r in self.requirements)

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


def _lex(text: str) -> list[tuple[int, str]]:
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


@frozen
class FieldSelector:
    """A parsed field selector: every term must match."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether an object with these selectable fields is selected."""
        return all(r.matches(fields) for r in self.requirements)

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
            for i in range(len(term)):
                operator = next((op for op in ("!=", "==", "=") if term.startswith(op, i)), None)
                if operator is not None:
                    break
            else:
                raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
            value = _unescape_field_value(term[i + len(operator):])
            requirements.append(FieldRequirement(term[:i], NOT_EQUALS if operator == "!=" else EQUALS, value))
    except ValueError as e:
        raise StatusError(400, str(e), "BadRequest") from None
    for requirement in requirements:
        if requirement.field not in allowed:
            raise StatusError(400, f"field label not supported: {requirement.field}", "BadRequest")
    return FieldSelector(tuple(requirements))
