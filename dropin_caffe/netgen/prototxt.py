"""Protobuf text format without a schema: read, edit and write Caffe prototxts as ordered trees.

Caffe forks (SSD, R-FCN, PSPNet, ...) add layer types and fields that Caffe's own caffe_pb2
rejects, so nothing here knows Caffe's schema. A file becomes a `Message`: an ordered list of
[name, value] fields in file order, repeated names allowed. A value is a nested `Message` or one
of five scalars:

  str    a quoted string, unescaped ('...' and "..." alike; adjacent literals concatenate)
  Enum   a bare identifier such as MAX, TRAIN or CONVOLUTION (a str subclass)
  bool   true/false, True/False, t/f
  int    decimal, hex 0x.. and octal 0.. literals that have no fraction or exponent
  float  anything else that is a number: 1.5, .5, 1e-3, 1.5f

The text format follows protobuf's: `name: value`, `name { ... }`, `name: { ... }`,
`name < ... >`, list syntax `name: [1, 2]` (stored as repeated fields), optional `,` or `;`
after a field, `#` comments, C escapes in strings. Caveats of reading without a schema:
`inf`, `infinity` and `nan` (and `-inf` ...) stay Enum, as does a float literal too large for a
double, so they are written back as they came; an empty list `dim: []` leaves no field, and a
string's bytes that are not UTF-8 are kept as surrogate escapes and written back as octal
escapes. `dumps` writes one canonical form (2-space indent, double quotes, ints as ints, floats
by repr), so writing what was read gives the same bytes again.

`check_with_caffe_pb2` asks Caffe's own parser whether it reads a text exactly as this module
does. `upgrade.upgrade_net` turns V1 nets into the current format.
"""
import gzip
import math
import os
import re

from .. import files
from ..errors import ConfigError, clip

__all__ = ["Enum", "Message", "PrototxtError", "parse", "dumps", "read", "write",
           "check_with_caffe_pb2"]

_MAX_DEPTH = 100  # protobuf's own text parser stops at 100 nested messages


class PrototxtError(ConfigError):
    """A prototxt cannot be read or written; syntax errors say FILE:LINE:COLUMN."""


class Enum(str):
    """An identifier token in value position: an enum value (MAX, TRAIN, CONVOLUTION) or inf/nan."""

    __slots__ = ()

    def __repr__(self):
        return "Enum(%s)" % str.__repr__(self)


def _same(a, b):
    """Structural equality that also tells 1 from 1.0 from True, and Enum("A") from "A"."""
    return type(a) is type(b) and a == b


class Message:
    """One protobuf message: `fields` is a list of [name, value] lists in file order."""

    __slots__ = ("fields",)
    __hash__ = None  # mutable

    def __init__(self, fields=()):
        self.fields = [[name, value] for name, value in fields]

    def get(self, name, default=None):
        """The value of the first field called `name`, else `default`."""
        for field in self.fields:
            if field[0] == name:
                return field[1]
        return default

    def get_all(self, name):
        """The values of all fields called `name`, in order."""
        return [value for field_name, value in self.fields if field_name == name]

    def __contains__(self, name):
        return any(field[0] == name for field in self.fields)

    def set(self, name, value):
        """Replace the first `name` field's value, or append the field when there is none."""
        for field in self.fields:
            if field[0] == name:
                field[1] = value
                return
        self.fields.append([name, value])

    def add(self, name, value):
        """Append a field (how repeated fields grow)."""
        self.fields.append([name, value])

    def remove(self, name):
        """Remove every field called `name`."""
        self.fields = [field for field in self.fields if field[0] != name]

    def insert(self, index, name, value):
        """Insert a field at position `index` of `fields`."""
        self.fields.insert(index, [name, value])

    def copy(self):
        """A deep copy: nested messages are copied, scalars are immutable."""
        return Message([name, value.copy() if type(value) is Message else value]
                       for name, value in self.fields)

    def __eq__(self, other):
        if type(other) is not Message:
            return NotImplemented
        if len(self.fields) != len(other.fields):
            return False
        for (name, value), (other_name, other_value) in zip(self.fields, other.fields):
            if name != other_name or not _same(value, other_value):
                return False
        return True

    def __repr__(self):
        return "Message(%r)" % (self.fields,)


# ---------------------------------------------------------------------------------------------
# Reading

# One regex for every token; whitespace and comments are matched (and dropped) like tokens, so
# the scanner never loops over characters in Python. A number must not run into a letter, digit
# or dot ("12abc", "1.2.3"): those are `malformed` and reported where they start.
#
# Scanning must stay linear on hostile input, so no alternative may backtrack over a long run.
# A number's body is matched atomically (Python 3.9 has no (?>...): a lookahead captures the
# greedy match, a backreference consumes it), so "123...9x" fails its lookahead once instead of
# retrying every split of the digits. An unterminated string is one token to the end of its
# line, so the scanner does not restart a string at every quote of '"\\"\\"\\"...'.
_TOKEN = re.compile(r"""
    (?P<skip>(?:[ \t\r\n\f\v]+|\#[^\n]*)+)
  | (?P<string>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
  | (?P<unterminated>"(?:[^"\\\n]|\\[^\n])*|'(?:[^'\\\n]|\\[^\n])*)
  | (?P<number>(?=(?P<number_body>0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?))
               (?P=number_body)(?![A-Za-z0-9_.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol>[{}<>\[\]:,;-])
  | (?P<malformed>[0-9.][A-Za-z0-9_.]*)
  | (?P<bad>.)
""", re.X | re.S)
_IDENTIFIER = re.compile(r"-?[A-Za-z_][A-Za-z0-9_]*\Z")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BOOLS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}
_NON_FINITE = {"inf", "infinity", "nan", "inff", "infinityf", "nanf"}
_CLOSE = {"{": "}", "<": ">"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))",
                     re.S)
_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f",
                   "v": b"\v", "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}


class _Parser:
    def __init__(self, text, filename):
        self.text = text
        self.filename = filename
        self.tokens = [(m.lastgroup, m.group(), m.start()) for m in _TOKEN.finditer(text)
                       if m.lastgroup != "skip"]
        self.tokens.append(("end", "", len(text)))
        self.i = 0

    def fail(self, expected, index=None, got=None):
        kind, token, position = self.tokens[self.i if index is None else index]
        if got is None:
            if kind == "end":
                got = "end of file"
            elif kind == "unterminated":
                got = "an unterminated string"
            elif kind == "bad":
                got = '"%s"' % token
            elif kind == "malformed":
                got = 'a malformed number "%s"' % clip(token)
            elif kind == "string":
                got = token if len(token) <= 40 else token[:36] + "..." + token[0]
            else:
                got = '"%s"' % clip(token)
        raise PrototxtError("%s: expected %s, got %s" % (self.where(position), expected, got))

    def where(self, position):
        line = self.text.count("\n", 0, position) + 1
        column = position - self.text.rfind("\n", 0, position)
        return "%s:%d:%d" % (self.filename, line, column)

    def message(self, close, depth):
        """Fields up to the `close` symbol ("" for end of file), which is consumed."""
        if depth > _MAX_DEPTH:
            self.fail("at most %d nested messages" % _MAX_DEPTH, self.i - 1, got="one more")
        tokens = self.tokens
        fields = []
        while True:
            kind, token, _ = tokens[self.i]
            if kind == "name":
                self.i += 1
                self.field(token, fields, depth)
                kind, token, _ = tokens[self.i]
                if kind == "symbol" and token in ",;":
                    self.i += 1
            elif (kind == "symbol" or kind == "end") and token == close:
                self.i += 1
                message = Message()
                message.fields = fields
                return message
            else:
                self.fail('"%s" or a field name' % close if close else "a field name or end of file")

    def field(self, name, fields, depth):
        tokens = self.tokens
        kind, token, _ = tokens[self.i]
        colon = kind == "symbol" and token == ":"
        if colon:
            self.i += 1
            kind, token, _ = tokens[self.i]
        if kind == "symbol" and token in _CLOSE:
            self.i += 1
            fields.append([name, self.message(_CLOSE[token], depth + 1)])
        elif kind == "symbol" and token == "[":
            self.i += 1
            self.items(name, fields, depth, messages_only=not colon)
        elif colon:
            fields.append([name, self.scalar()])
        else:
            self.fail('":" or "{" after field name "%s"' % clip(name))

    def items(self, name, fields, depth, messages_only):
        """The rest of a list `[a, b, ...]`: each item becomes one repeated field."""
        tokens = self.tokens
        if tokens[self.i][1] == "]" and tokens[self.i][0] == "symbol":
            self.i += 1
            return
        while True:
            kind, token, _ = tokens[self.i]
            if kind == "symbol" and token in _CLOSE:
                self.i += 1
                fields.append([name, self.message(_CLOSE[token], depth + 1)])
            elif messages_only:
                self.fail('"{" (a list without ":" holds messages)')
            else:
                fields.append([name, self.scalar()])
            kind, token, _ = tokens[self.i]
            self.i += 1
            if kind == "symbol" and token == "]":
                return
            if not (kind == "symbol" and token == ","):
                self.fail('"," or "]" in the list for "%s"' % clip(name), self.i - 1)

    def scalar(self):
        tokens = self.tokens
        kind, token, _ = tokens[self.i]
        self.i += 1
        if kind == "number":
            return self.number(token, self.i - 1)
        if kind == "string":
            if tokens[self.i][0] != "string" and "\\" not in token:
                return token[1:-1]
            # Adjacent literals join as bytes before decoding: "\303" "\251" is one character.
            parts = [self.unescape(token, self.i - 1)]
            while tokens[self.i][0] == "string":
                parts.append(self.unescape(tokens[self.i][1], self.i))
                self.i += 1
            return b"".join(parts).decode("utf-8", "surrogateescape")
        if kind == "name":
            value = _BOOLS.get(token)
            return Enum(token) if value is None else value
        if kind == "symbol" and token == "-":
            kind, token, _ = tokens[self.i]
            self.i += 1
            if kind == "number":
                value = self.number(token, self.i - 1)
                return Enum("-" + value) if type(value) is Enum else -value
            if kind == "name" and token.lower() in _NON_FINITE:
                return Enum("-" + token)
            self.fail("a number after \"-\"", self.i - 1)
        self.fail("a value (number, string or identifier)", self.i - 1)

    def number(self, token, index):
        if token[:2] in ("0x", "0X"):
            return int(token, 16)
        if token[-1] in "fF" or "." in token or "e" in token or "E" in token:
            value = float(token[:-1] if token[-1] in "fF" else token)
            # A literal beyond a double's range would be written back as "inf" and read back
            # as an Enum; keeping the literal itself round-trips exactly.
            return value if math.isfinite(value) else Enum(token)
        if len(token) > 1 and token[0] == "0":
            if token.strip("01234567"):
                self.fail("an octal number (a leading 0 means octal)", index)
            return int(token, 8)
        return int(token)

    def unescape(self, token, index):
        """The bytes a string literal stands for."""
        body = token[1:-1]
        parts = []
        last = 0
        for match in _ESCAPE.finditer(body):
            parts.append(body[last:match.start()].encode("utf-8", "surrogateescape"))
            octal, hexa, short, long_, char = match.groups()
            if octal is not None:
                if int(octal, 8) > 255:
                    self.fail("an octal escape up to \\377", index, got='"\\%s"' % octal)
                parts.append(bytes((int(octal, 8),)))
            elif hexa is not None:
                parts.append(bytes((int(hexa, 16),)))
            elif short is not None or long_ is not None:
                code = int(short or long_, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    self.fail("a Unicode code point", index, got='"%s"' % match.group())
                parts.append(chr(code).encode("utf-8"))
            elif char in _SIMPLE_ESCAPES:
                parts.append(_SIMPLE_ESCAPES[char])
            else:
                self.fail("a C escape (\\n \\t \\\\ \\' \\\" \\ooo \\xHH ...) in a string", index,
                          got='"\\%s"' % char)
            last = match.end()
        parts.append(body[last:].encode("utf-8", "surrogateescape"))
        return b"".join(parts)


def parse(text, filename="<string>"):
    """Parse protobuf text format into a Message.

    Raises PrototxtError (a ConfigError) as "FILE:LINE:COLUMN: expected ..., got ...".
    """
    parser = _Parser(text, filename)
    return parser.message("", 0)


# ---------------------------------------------------------------------------------------------
# Writing

_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\x7f\ud800-\udfff]')
_WRITE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match):
    char = match.group()
    if char in _WRITE_ESCAPES:
        return _WRITE_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        # A surrogate escape stands for one byte that was not UTF-8: write that byte back.
        return "\\%03o" % (code - 0xDC00)
    if 0xD800 <= code <= 0xDFFF:
        raise PrototxtError("cannot write the lone surrogate U+%04X: strings must be text or "
                            "surrogate-escaped bytes" % code)
    return "\\%03o" % code


def _format(value, name):
    kind = type(value)
    if kind is Enum:
        if not _IDENTIFIER.match(value) and not (value[:1] in "-0123456789." and _is_number_literal(value)):
            raise PrototxtError('cannot write field "%s": an Enum must be an identifier, got %s'
                                % (clip(name), clip(repr(value))))
        return value
    if kind is str:
        return '"%s"' % (_NEEDS_ESCAPE.sub(_escape_char, value) if _NEEDS_ESCAPE.search(value) else value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if math.isfinite(value):
            return repr(value)
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    raise PrototxtError('cannot write field "%s": values must be Message, str, Enum, bool, int or float, '
                        'got %s %s' % (clip(name), type(value).__name__, clip(repr(value))))


def _is_number_literal(text):
    match = _TOKEN.match(text.lstrip("-"))
    return match is not None and match.lastgroup == "number" and match.end() == len(text.lstrip("-"))


def _dump(message, indent, out, depth):
    if depth > _MAX_DEPTH:
        raise PrototxtError("cannot write more than %d nested messages" % _MAX_DEPTH)
    pad = "  " * indent
    for name, value in message.fields:
        if type(name) is not str or not _FIELD_NAME.match(name):
            raise PrototxtError("cannot write a field: names must be identifiers, got %s" % clip(repr(name)))
        if type(value) is Message:
            out.append("%s%s {\n" % (pad, name))
            _dump(value, indent + 1, out, depth + 1)
            out.append(pad + "}\n")
        else:
            out.append("%s%s: %s\n" % (pad, name, _format(value, name)))


def dumps(message):
    """Canonical text: 2-space indent, one field per line, `name {` ... `}` for messages.

    parse(dumps(m)) == m, and dumps(parse(dumps(m))) == dumps(m) byte for byte.
    """
    if type(message) is not Message:
        raise PrototxtError("dumps needs a Message, got %s" % type(message).__name__)
    out = []
    _dump(message, 0, out, 0)
    return "".join(out)


def read(path):
    """Read a .prototxt (or a gzip-compressed .prototxt.gz) into a Message."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise PrototxtError("cannot read %s: no such file; check the path" % path) from None
    except IsADirectoryError:
        raise PrototxtError("cannot read %s: it is a directory, not a prototxt file" % path) from None
    except files.READ_ERRORS as error:
        raise PrototxtError("cannot read %s: %s" % (path, files.read_error_reason(error))) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start
        line = data.count(b"\n", 0, start) + 1
        column = start - data.rfind(b"\n", 0, start)  # in bytes, counting from 1
        raise PrototxtError("%s:%d:%d: a prototxt must be UTF-8 text, got byte 0x%02x (byte offset %d); "
                            "save the file as UTF-8" % (path, line, column, data[start], start)) from None
    return parse(text, filename=path)


def write(path, message, force=False):
    """Write `dumps(message)` to `path` atomically (see `dropin_caffe.files`).

    Refuses an existing file unless `force`. A path ending in .gz is written gzip-compressed
    (with no timestamp, so the bytes are stable). On any failure nothing is left behind.
    """
    path = os.fspath(path)
    data = dumps(message).encode("utf-8", "surrogateescape")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    files.write_atomic(path, data, force)


# ---------------------------------------------------------------------------------------------
# Caffe's opinion

_CAFFE_KINDS = {"net": "NetParameter", "solver": "SolverParameter"}


def check_with_caffe_pb2(text, kind, tree=None, filename="<string>"):
    """Check that Caffe's caffe_pb2 reads `text` exactly as the tree we hold (default: parse(text)).

    Caffe parses `text` into a NetParameter ("net") or SolverParameter ("solver"), and parses
    dumps(tree); the two must serialize (deterministically) to the same bytes. That comparison is
    exact: every field, repeated order, enum, string byte and float bit, independent of field
    order and number spelling in the text. On our own output (text = dumps(tree)) it checks that
    Caffe accepts it; on an original file it checks that reading and rewriting it kept its meaning.

    Returns True when checked, False when caffe_pb2 or protobuf cannot be imported. Raises
    PrototxtError when Caffe rejects either text or the two differ.
    """
    if kind not in _CAFFE_KINDS:
        raise PrototxtError('check_with_caffe_pb2: kind must be "net" or "solver", got %r' % (kind,))
    try:
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format
    except ImportError:
        return False
    if tree is None:
        tree = parse(text, filename)
    ours = dumps(tree)
    cls = getattr(caffe_pb2, _CAFFE_KINDS[kind])
    parsed = []
    for label, source in (("the text", text), ("our rewrite of it", ours))[:1 if ours == text else 2]:
        message = cls()
        try:
            text_format.Parse(source, message)
        except text_format.ParseError as error:
            raise PrototxtError("%s: caffe_pb2 rejects %s as a %s: %s; fields Caffe does not know "
                                "(a fork's layers?) need that fork's Caffe"
                                % (filename, label, _CAFFE_KINDS[kind], error)) from None
        parsed.append(message)
    if len(parsed) == 2 and (parsed[0].SerializeToString(deterministic=True)
                             != parsed[1].SerializeToString(deterministic=True)):
        theirs, mine = (text_format.MessageToString(m).splitlines() for m in parsed)
        line = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(theirs), len(mine)))
        show = lambda lines: lines[line].strip() if line < len(lines) else "(end)"  # noqa: E731
        raise PrototxtError("%s: caffe_pb2 reads the text differently from our tree: at line %d of its "
                            "printout it has `%s` where our tree gives `%s`; please report this file"
                            % (filename, line + 1, show(theirs), show(mine)))
    return True
