"""Reading a Python layer's `param_str`: a JSON object checked key by key, never evaluated.

pycaffe tells a Python layer its `param_str` and phase but not its name, so an optional
"name" key (the generator always writes it) lets every message name the layer.
"""
import json
import numbers
import re

from .errors import ConfigError, clip


def layer_label(kind, param_str, name=None):
    """How messages refer to a layer: by name when known, else by (the start of) its param_str."""
    return "%s '%s'" % (kind, clip(name)) if name else "%s (param_str %s)" % (kind, clip(repr(param_str)))


# The "name" the generator writes first, found without parsing, so that a param_str that is not
# valid JSON (or nests too deep for json) still gets messages naming its layer.
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# Caffe's blob dimensions and element counts are C++ ints: a larger one is a CHECK failure, which
# aborts the whole process (Blob::Reshape, "blob size exceeds INT_MAX").
INT_MAX = 2 ** 31 - 1


def integer(minimum):
    return ("an integer >= %d" % minimum, lambda v: _is_int(v) and v >= minimum)


def choice(*options):
    return ("one of %s" % ", ".join(json.dumps(o) for o in options), lambda v: v in options)


def probability():
    return ("a number with 0 < value <= 1", lambda v: _is_number(v) and 0 < v <= 1)


def text():
    return ("a string", lambda v: isinstance(v, str))


def _show(value):
    """A JSON value as a message echoes it; a value too deep to dump is still described."""
    try:
        return clip(json.dumps(value))
    except RecursionError:
        return "a %s nested too deeply to show" % type(value).__name__


def parse(kind, param_str, rules, defaults):
    """Parse `param_str` against `rules` ({key: (rule text, check)}); return the checked dict.

    Raises ConfigError naming the layer, the key, the rule and the value received.
    """
    if not isinstance(param_str, str):
        raise ConfigError("%s: param_str must be a string holding a JSON object, got %s"
                          % (kind, type(param_str).__name__))
    found = _NAME.search(param_str[:10000])
    label = "%s '%s'" % (kind, clip(found.group(1))) if found else kind
    try:
        given = json.loads(param_str) if param_str.strip() else {}
    except ValueError as error:
        raise ConfigError("%s: param_str must be a JSON object such as '{\"length\": 1000}', got %s (%s)"
                          % (label, clip(repr(param_str)), error)) from None
    except RecursionError:
        # json's decoder recurses once per nesting level; no parameter of ours nests at all.
        raise ConfigError("%s: param_str nests too deeply for JSON (our parameters are flat: "
                          "'{\"length\": 1000}')" % label) from None
    if not isinstance(given, dict):
        raise ConfigError("%s: param_str must be a JSON object such as '{\"length\": 1000}', got %s"
                          % (label, clip(repr(param_str))))
    label = layer_label(kind, param_str, given.get("name") if isinstance(given.get("name"), str) else None)
    for key, value in given.items():
        if key not in rules:
            raise ConfigError('%s: unknown key "%s" in param_str; known keys: %s'
                              % (label, clip(key), ", ".join(sorted(rules))))
        rule, check = rules[key]
        if not check(value):
            raise ConfigError('%s: "%s" must be %s, got %s' % (label, key, rule, _show(value)))
    return dict(defaults, **given), label


# The param_str rules of our two layers (the Python and the native ones, and the NetSpec helpers).
DROPIN_RULES = {
    "name": text(),
    "mode": choice("gradual", "regularize"),
    "length": integer(1),
    "start": integer(0),
    "p_new": probability(),
    "iter_size": integer(1),
    "seed": integer(0),
    "test": choice("expectation", "new", "prev"),
    "train": choice("select", "blend"),
}
DROPIN_DEFAULTS = {"mode": "gradual", "iter_size": 1, "seed": None, "test": "expectation", "train": "select"}
RESIZE_RULES = {
    "name": text(),
    "channels": integer(1),
    "height": integer(1),
    "width": integer(1),
    "interp": choice("bilinear", "nearest"),
}
RESIZE_DEFAULTS = {"interp": "bilinear"}

# DropIn's keys by mode: the one it needs, the ones that mean nothing there.
_MODE_KEYS = {"gradual": ("length", ("p_new",)), "regularize": ("p_new", ("length", "start"))}


def layer_config(kind, param_str):
    """The checked param_str of our layer `kind` ("DropIn" or "Resize"): (config, label)."""
    if kind == "Resize":
        config, label = parse(kind, param_str, RESIZE_RULES, RESIZE_DEFAULTS)
        for key in ("channels", "height", "width"):
            if config.get(key, 0) > INT_MAX:
                raise ConfigError('%s: "%s" must be at most %d (INT_MAX: Caffe\'s blob dimensions are C ints), '
                                  'got %s' % (label, key, INT_MAX, _show(config[key])))
        return config, label
    config, label = parse(kind, param_str, DROPIN_RULES, DROPIN_DEFAULTS)
    needed, forbidden = _MODE_KEYS[config["mode"]]
    if needed not in config:
        raise ConfigError('%s: mode "%s" needs "%s" in param_str' % (label, config["mode"], needed))
    for other in forbidden:
        if other in config:
            raise ConfigError('%s: "%s" has no meaning in mode "%s"; remove it' % (label, other, config["mode"]))
    return config, label
