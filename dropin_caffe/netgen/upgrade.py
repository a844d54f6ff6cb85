"""Upgrade old Caffe nets to the current format on schema-free prototxt trees.

Does what Caffe's own upgrade (upgrade_net_proto_text, or Caffe reading an old file) does to a
net, in the same steps and with the same results as Caffe 1.0 parses them:

1. Data transformation fields: `scale`, `mean_file`, `crop_size` and `mirror` written inside
   the `data_param` / `image_data_param` / `window_data_param` of a V1 DATA, IMAGE_DATA or
   WINDOW_DATA layer move to its `transform_param`. As in Caffe, once any layer needs this,
   every layer of those three types gets both messages (possibly empty).
2. V1 layers: `layers { type: CONVOLUTION ... }` becomes `layer { type: "Convolution" ... }`;
   the i-th `param` (a share name), `blob_share_mode`, `blobs_lr` and `weight_decay` become
   the i-th `param { name share_mode lr_mult decay_mult }`. Every other field (include,
   exclude, loss_weight, the `*_param` messages, and fields from Caffe forks) is kept.
3. Net inputs: `input` with `input_dim` (4 per input) or `input_shape` becomes one layer
   `layer { name: "input" type: "Input" top: ... input_param { shape { dim ... } } }` placed
   first, as Caffe names and places it; `input` without dimensions is dropped.

The upgraded layer lists name, type, bottom, top, loss_weight, param, blobs, include and exclude
first (the current format's order) and then its other fields in file order; nested messages
are untouched. V0 nets (`layers { layer { ... } }`, before 2014) are refused, as is a net that
mixes `layer` and `layers`. BatchNorm parameter rewriting, which Caffe also does on load to
current-format nets, is not an upgrade of the file format and is left to Caffe.
"""
from ..errors import ConfigError
from .prototxt import Enum, Message

# V1LayerParameter.LayerType: enum name -> (number, current type string), as in caffe.proto
# and Caffe's UpgradeV1LayerType.
V1_LAYER_TYPES = {
    "NONE": (0, ""),
    "ACCURACY": (1, "Accuracy"),
    "BNLL": (2, "BNLL"),
    "CONCAT": (3, "Concat"),
    "CONVOLUTION": (4, "Convolution"),
    "DATA": (5, "Data"),
    "DROPOUT": (6, "Dropout"),
    "EUCLIDEAN_LOSS": (7, "EuclideanLoss"),
    "FLATTEN": (8, "Flatten"),
    "HDF5_DATA": (9, "HDF5Data"),
    "HDF5_OUTPUT": (10, "HDF5Output"),
    "IM2COL": (11, "Im2col"),
    "IMAGE_DATA": (12, "ImageData"),
    "INFOGAIN_LOSS": (13, "InfogainLoss"),
    "INNER_PRODUCT": (14, "InnerProduct"),
    "LRN": (15, "LRN"),
    "MULTINOMIAL_LOGISTIC_LOSS": (16, "MultinomialLogisticLoss"),
    "POOLING": (17, "Pooling"),
    "RELU": (18, "ReLU"),
    "SIGMOID": (19, "Sigmoid"),
    "SOFTMAX": (20, "Softmax"),
    "SOFTMAX_LOSS": (21, "SoftmaxWithLoss"),
    "SPLIT": (22, "Split"),
    "TANH": (23, "TanH"),
    "WINDOW_DATA": (24, "WindowData"),
    "ELTWISE": (25, "Eltwise"),
    "POWER": (26, "Power"),
    "SIGMOID_CROSS_ENTROPY_LOSS": (27, "SigmoidCrossEntropyLoss"),
    "HINGE_LOSS": (28, "HingeLoss"),
    "MEMORY_DATA": (29, "MemoryData"),
    "ARGMAX": (30, "ArgMax"),
    "THRESHOLD": (31, "Threshold"),
    "DUMMY_DATA": (32, "DummyData"),
    "SLICE": (33, "Slice"),
    "MVN": (34, "MVN"),
    "ABSVAL": (35, "AbsVal"),
    "SILENCE": (36, "Silence"),
    "CONTRASTIVE_LOSS": (37, "ContrastiveLoss"),
    "EXP": (38, "Exp"),
    "DECONVOLUTION": (39, "Deconvolution"),
}
_TYPE_BY_NUMBER = {number: name for name, (number, _) in V1_LAYER_TYPES.items()}
_SHARE_MODES = {0: "STRICT", 1: "PERMISSIVE"}  # V1LayerParameter.DimCheckMode == ParamSpec.DimCheckMode

# The layer types whose own parameter message once held the data transformation fields.
_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mirror", "crop_size", "mean_file")  # TransformationParameter order

# Fields the upgrade writes first, in the current LayerParameter's order.
_HEAD = ("name", "type", "bottom", "top", "loss_weight", "param", "blobs", "include", "exclude")
_V1_PARAM_FIELDS = ("param", "blob_share_mode", "blobs_lr", "weight_decay")
_INPUT_FIELDS = ("input", "input_dim", "input_shape")


def needs_upgrade(net):
    """True when `net` has V1 `layers` or net-level `input` fields."""
    return "layers" in net or "input" in net


def upgrade_net(net):
    """Return `net` in the current format: a new tree; `net` itself is not changed.

    A net already in the current format comes back equal to the input. Raises ConfigError for
    a net that mixes `layer` and `layers`, V0 layers, unknown V1 layer types and inconsistent
    input dimensions.
    """
    if not isinstance(net, Message):
        raise ConfigError("upgrade_net needs a prototxt Message, got %s" % type(net).__name__)
    net = net.copy()
    v1_layers = net.get_all("layers")
    if v1_layers:
        current = len(net.get_all("layer"))
        if current:
            raise ConfigError(
                "net mixes `layer` and `layers`, got %d `layer` and %d `layers` blocks: Caffe silently "
                "ignores the `layer` blocks of such a file (Caffe 1.0 refuses it); upgrade the `layers` "
                "with upgrade_net_proto_text or use one form, `layer { type: \"...\" }` for every layer"
                % (current, len(v1_layers)))
        for index, layer in enumerate(v1_layers):
            _check_v1(layer, index)
        if any(_needs_data_upgrade(layer) for layer in v1_layers):
            for layer in v1_layers:
                _upgrade_data_transformation(layer)
        net.fields = [["layer", _upgrade_v1_layer(value)] if name == "layers" else [name, value]
                      for name, value in net.fields]
    if "input" in net:
        _upgrade_input(net)
    return net


def _v1_type_name(layer, index):
    """The V1 enum name of a layer's type (numbers allowed), or None for a type given as a string."""
    value = layer.get("type")
    if type(value) is Enum:
        if value not in V1_LAYER_TYPES:
            raise ConfigError("V1 layer %s: type must be a V1 layer type such as CONVOLUTION, got %s; "
                              "a current-format layer is written `layer { type: \"...\" }`"
                              % (_label(layer, index), value))
        return str(value)
    if type(value) is int:
        if value not in _TYPE_BY_NUMBER:
            raise ConfigError("V1 layer %s: type number must be 0..39, got %d"
                              % (_label(layer, index), value))
        return _TYPE_BY_NUMBER[value]
    return None


def _label(layer, index):
    name = layer.get("name")
    return '"%s" (layers block %d)' % (name, index + 1) if isinstance(name, str) else "block %d" % (index + 1)


def _check_v1(layer, index):
    if not isinstance(layer, Message):
        raise ConfigError("`layers` must be a message `layers { ... }`, got %r at block %d"
                          % (layer, index + 1))
    if "layer" in layer:
        raise ConfigError("V1 layer %s holds a V0 `layer { ... }` (Caffe before 2014): upgrade the file with "
                          "Caffe's upgrade_net_proto_text first" % _label(layer, index))
    _v1_type_name(layer, index)


def _needs_data_upgrade(layer):
    param = layer.get(_DATA_PARAMS.get(_v1_type_name(layer, 0), ""))
    return isinstance(param, Message) and any(field in param for field in _TRANSFORM_FIELDS)


def _upgrade_data_transformation(layer):
    param_name = _DATA_PARAMS.get(_v1_type_name(layer, 0))
    if param_name is None:
        return
    # Caffe's mutable_*_param() creates both messages even when empty: do the same, so the
    # result is the message Caffe builds.
    if param_name not in layer:
        layer.add(param_name, Message())
    param = layer.get(param_name)
    if "transform_param" not in layer:
        position = [name for name, _ in layer.fields].index(param_name)
        layer.insert(position, "transform_param", Message())
    transform = layer.get("transform_param")
    for field in _TRANSFORM_FIELDS:
        if field in param:
            transform.set(field, param.get_all(field)[-1])  # the last of repeated optionals wins
            param.remove(field)


def _upgrade_v1_layer(layer):
    names = layer.get_all("param")
    modes = layer.get_all("blob_share_mode")
    lr_mults = layer.get_all("blobs_lr")
    decay_mults = layer.get_all("weight_decay")
    params = []
    for i in range(max(len(names), len(modes), len(lr_mults), len(decay_mults))):
        param = Message()
        if i < len(names):
            param.add("name", names[i])
        if i < len(modes):
            mode = modes[i]
            param.add("share_mode", Enum(_SHARE_MODES.get(mode, mode)) if type(mode) is int else mode)
        if i < len(lr_mults):
            param.add("lr_mult", lr_mults[i])
        if i < len(decay_mults):
            param.add("decay_mult", decay_mults[i])
        params.append(param)

    type_name = _v1_type_name(layer, 0)
    upgraded = Message()
    for head in _HEAD:
        if head == "param":
            for param in params:
                upgraded.add("param", param)
        elif head == "type" and type_name is not None:
            upgraded.add("type", V1_LAYER_TYPES[type_name][1])
        else:
            for value in layer.get_all(head):
                upgraded.add(head, value)
    for name, value in layer.fields:
        if name not in _HEAD and name not in _V1_PARAM_FIELDS:
            upgraded.add(name, value)
    return upgraded


def _upgrade_input(net):
    inputs = net.get_all("input")
    dims = net.get_all("input_dim")
    shapes = net.get_all("input_shape")
    first = min(i for i, (name, _) in enumerate(net.fields) if name in _INPUT_FIELDS)
    net.fields = [field for field in net.fields if field[0] not in _INPUT_FIELDS]
    if not dims and not shapes:
        return  # a bare `input` names a blob of an old caffemodel; Caffe drops it too
    if shapes and len(shapes) != len(inputs):
        raise ConfigError("net inputs: need one input_shape per input, got %d input and %d input_shape; "
                          "give each input its shape" % (len(inputs), len(shapes)))
    if not shapes and len(dims) != 4 * len(inputs):
        raise ConfigError("net inputs: need 4 input_dim per input (N, C, H, W), got %d input and %d "
                          "input_dim; fix the dimensions or use input_shape { dim: ... }"
                          % (len(inputs), len(dims)))
    layer = Message([["name", "input"], ["type", "Input"]])
    input_param = Message()
    for i, top in enumerate(inputs):
        layer.add("top", top)
        if shapes:
            input_param.add("shape", shapes[i])
        else:
            input_param.add("shape", Message([["dim", dim] for dim in dims[4 * i:4 * i + 4]]))
    layer.add("input_param", input_param)
    names = [name for name, _ in net.fields]
    net.insert(names.index("layer") if "layer" in names else first, "layer", layer)
