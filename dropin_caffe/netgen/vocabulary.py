"""What the net toolkit knows about Caffe's layer types, in one place.

Type strings are Caffe 1.0's (layer_factory and the layer sources); a fork's types are unknown
here on purpose, and the tools treat them as such (their shapes unknown, carried through).
"""
from ..errors import ConfigError
from .prototxt import Message

PHASES = ("TRAIN", "TEST")

# Layers that read a source Caffe opens at setup, with the parameter message naming it.
SOURCE_PARAMS = {"Data": "data_param", "ImageData": "image_data_param", "HDF5Data": "hdf5_data_param",
                 "WindowData": "window_data_param", "MemoryData": "memory_data_param"}
DATA_TYPES = {"Input", "DummyData"} | set(SOURCE_PARAMS)

# Top = bottom, no learnable values.
ELEMENTWISE = {"ReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold",
               "Clip", "Swish", "Dropout", "LRN", "MVN", "Softmax"}
ACTIVATION_TYPES = {"ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "BNLL"}
LOSSES = {"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss", "HingeLoss",
          "InfogainLoss", "MultinomialLogisticLoss"}

# Followers: the layers that belong to the unit of the layer before them when they are its
# output's only reader, even when not in place (conv -> BatchNorm -> Scale -> ReLU with separate
# tops, conv -> ReLU -> LRN). One bottom, one top, the shape kept, per unit or per channel.
FOLLOWER_TYPES = {"BatchNorm", "Scale", "Bias", "ReLU", "PReLU", "ELU", "TanH", "Sigmoid", "LRN", "Dropout"}

CONV_TYPES = {"Convolution", "Deconvolution"}
# The layers counted as a net's depth ("13 weight layers").
WEIGHT_TYPES = CONV_TYPES | {"InnerProduct"}
# Every layer with learned parameters (drawn as such).
LEARNED_TYPES = WEIGHT_TYPES | {"BatchNorm", "Scale", "Bias", "PReLU", "Embed"}

# Our Python layers: module, and the classes in it.
DROPIN_MODULE = "dropin_caffe.layers"
OUR_LAYERS = ("DropIn", "Resize")


def phase(value):
    """"TRAIN" or "TEST" from any spelling (an Enum, lower case); ConfigError otherwise."""
    name = str(value).upper()
    if name not in PHASES:
        raise ConfigError("phase must be TRAIN or TEST, got %r" % (name,))
    return name


def is_loss(kind):
    """A loss layer: Caffe's own, or a fork's named like them (...Loss)."""
    return kind in LOSSES or str(kind).endswith("Loss")


def is_data(layer):
    """A layer that makes blobs from outside the net: a data type, or any layer without bottoms."""
    return str(layer.get("type", "")) in DATA_TYPES or not layer.get_all("bottom")


def our_layer(layer):
    """"DropIn" or "Resize" for a Python layer of ours, else None."""
    param = layer.get("python_param") if str(layer.get("type", "")) == "Python" else None
    if param is None or str(param.get("module", "")) != DROPIN_MODULE:
        return None
    kind = str(param.get("layer", ""))
    return kind if kind in OUR_LAYERS else None


def in_place(layer, blob):
    """The layer reads and writes `blob` alone (ReLU in place, ...)."""
    return layer.get_all("bottom") == [blob] and layer.get_all("top") == [blob]


# ---------------------------------------------------------------------------------------------
# The shape every net must have before anything reads it

# A schema-free reader accepts `layer: "conv2"` or `name { }`; Caffe's schema would not. The
# fields every tool here reads, and the value types Caffe's NetParameter gives them.
_NET_FIELDS = {"name": str, "input": str, "input_dim": int, "force_backward": bool, "debug_info": bool}
_NET_MESSAGES = ("input_shape", "state")  # `layer` is checked with its index below
_LAYER_SCALARS = {"name": str, "type": str, "bottom": str, "top": str}
_SINGULAR = ("name", "type")
_RULE_FIELDS = {"min_level": int, "max_level": int, "stage": str, "not_stage": str}
_KINDS = {str: "a quoted string", int: "an integer", bool: "true or false"}


def _shown(value):
    text = "a message { ... }" if type(value) is Message else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_structure(net):
    """Refuse a net whose layers are not shaped as Caffe's schema says, before any tool reads it.

    Every `layer` must be a message with a string `type`; `name`, `type`, `bottom` and `top` must
    be quoted strings (name and type given once); `include`/`exclude` rules and every `*_param`
    must be messages, a rule's phase TRAIN or TEST. Messages name the layer, or its position
    (layer #3, counting from 1) when it has no usable name, and the field.
    """
    for key, value in net.fields:
        if key in _NET_FIELDS and type(value) is not _NET_FIELDS[key]:
            raise ConfigError('net: "%s" must be %s, got %s' % (key, _KINDS[_NET_FIELDS[key]], _shown(value)))
        if key in _NET_MESSAGES and type(value) is not Message:
            raise ConfigError('net: "%s" must be a message `%s { ... }`, got %s' % (key, key, _shown(value)))
    for index, layer in enumerate(net.get_all("layer"), 1):
        if type(layer) is not Message:
            raise ConfigError('net: layer #%d must be a message `layer { name: "..." type: "..." ... }`, got %s'
                              % (index, _shown(layer)))
        name = layer.get("name")
        label = "layer '%s'" % name if type(name) is str and name else "layer #%d" % index
        for key, value in layer.fields:
            if key in _LAYER_SCALARS and type(value) is not str:
                raise ConfigError('%s: "%s" must be a quoted string, got %s' % (label, key, _shown(value)))
            if (key in ("include", "exclude", "param") or key.endswith("_param")) \
                    and type(value) is not Message:
                raise ConfigError('%s: "%s" must be a message `%s { ... }`, got %s' % (label, key, key, _shown(value)))
            if key == "loss_weight" and type(value) not in (int, float):
                raise ConfigError('%s: "loss_weight" must be a number, got %s' % (label, _shown(value)))
        for key in _SINGULAR:
            if len(layer.get_all(key)) > 1:
                raise ConfigError('%s: "%s" is given %d times; give it once' % (label, key, len(layer.get_all(key))))
        if "type" not in layer:
            raise ConfigError('%s: needs "type" (Caffe\'s layer type, e.g. type: "Convolution")' % label)
        for which in ("include", "exclude"):
            for rule in layer.get_all(which):
                for key, value in rule.fields:
                    if key == "phase" and str(value) not in PHASES:
                        raise ConfigError('%s: "%s { phase }" must be TRAIN or TEST, got %s'
                                          % (label, which, _shown(value)))
                    if key in _RULE_FIELDS and type(value) is not _RULE_FIELDS[key]:
                        raise ConfigError('%s: "%s { %s }" must be %s, got %s'
                                          % (label, which, key, _KINDS[_RULE_FIELDS[key]], _shown(value)))
