"""What the net toolkit knows about Caffe's layer types, in one place.

Type strings are Caffe 1.0's (layer_factory and the layer sources); a fork's types are unknown
here on purpose, and the tools treat them as such (their shapes unknown, carried through).
"""
from ..errors import ConfigError

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
