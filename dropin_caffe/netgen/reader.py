"""Reading the nets and solvers the tools are given: a path, prototxt text, a `prototxt.Message`,
or a protobuf message (caffe_pb2's, as a NetSpec's `to_proto()` gives); a net checked and upgraded
to the current format in one sequence, so every tool reads a net alike."""
import os

from ..errors import ConfigError
from . import prototxt, upgrade, vocabulary


def _is_text(value):
    return "\n" in value or "{" in value


def _is_protobuf(value):
    """A protobuf message, such as the caffe_pb2.NetParameter of Caffe's `NetSpec.to_proto()`."""
    return hasattr(value, "DESCRIPTOR") and hasattr(value, "SerializeToString")


def is_inline(value):
    """`value` is a prototxt given inline (text or a message), not a path."""
    return isinstance(value, prototxt.Message) or _is_protobuf(value) or (isinstance(value, str) and _is_text(value))


def stem(path):
    """A file name without its folder and its prototxt extensions (.prototxt, .pt, .txt, .gz)."""
    name = os.path.basename(path)
    for ext in (".gz", ".prototxt", ".pt", ".txt"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def name_of(value, inline):
    """What outputs made from `value` are named after: its file's stem, or `inline` for text or a message."""
    return inline if is_inline(value) else stem(value)


def read_prototxt(value, what):
    """A prototxt given as a Message, a protobuf message (caffe_pb2's), its text, or a path."""
    if isinstance(value, prototxt.Message):
        return value.copy()
    if _is_protobuf(value):
        from google.protobuf import text_format
        return prototxt.parse(text_format.MessageToString(value), "<%s message>" % what)
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError("%s must be a path, prototxt text or a message, got %s" % (what, type(value).__name__))
    if isinstance(value, str) and _is_text(value):
        return prototxt.parse(value, "<%s text>" % what)
    return prototxt.read(value)


def read_net(value):
    """The net `value` in the current format: read, its structure checked (before the upgrade, so
    that "layer #N" counts the user's own layers), V1 layers upgraded, field typos refused."""
    tree = read_prototxt(value, "net")
    vocabulary.check_structure(tree)
    tree = upgrade.upgrade_net(tree)
    vocabulary.check_typos(tree)
    return tree
