"""What the net toolkit knows about Caffe's layer types, in one place.

Type strings are Caffe 1.0's (layer_factory and the layer sources); a fork's types are unknown
here on purpose, and the tools treat them as such (their shapes unknown, carried through).
"""
from ..errors import ConfigError, clip
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

# Our Python layers: module, and the classes in it; and the type names of the native (C++) layers,
# which read the same python_param { param_str } (dropin_caffe.native).
DROPIN_MODULE = "dropin_caffe.layers"
OUR_LAYERS = ("DropIn", "Resize")
NATIVE_TYPES = {"DropIn": "DropIn", "DropInResize": "Resize"}


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
    """"DropIn" or "Resize" for a layer of ours (Python or native), else None."""
    kind = str(layer.get("type", ""))
    if kind in NATIVE_TYPES:
        return NATIVE_TYPES[kind]
    param = layer.get("python_param") if kind == "Python" else None
    if param is None or str(param.get("module", "")) != DROPIN_MODULE:
        return None
    kind = str(param.get("layer", ""))
    return kind if kind in OUR_LAYERS else None


def is_native(layer):
    """A native (C++) layer of ours: its library must be loaded before Caffe builds the net."""
    return str(layer.get("type", "")) in NATIVE_TYPES


def in_place(layer, blob):
    """The layer reads and writes `blob` alone (ReLU in place, ...)."""
    return layer.get_all("bottom") == [blob] and layer.get_all("top") == [blob]


# The fields of Caffe 1.0"s LayerParameter ("layer") and of its *_param messages (caffe.proto).
CAFFE_FIELDS = {
    "layer": set("""accuracy_param argmax_param batch_norm_param bias_param blobs bottom clip_param
            concat_param contrastive_loss_param convolution_param crop_param data_param dropout_param
            dummy_data_param eltwise_param elu_param embed_param exclude exp_param flatten_param
            hdf5_data_param hdf5_output_param hinge_loss_param image_data_param include
            infogain_loss_param inner_product_param input_param log_param loss_param loss_weight
            lrn_param memory_data_param mvn_param name param parameter_param phase pooling_param
            power_param prelu_param propagate_down python_param recurrent_param reduction_param
            relu_param reshape_param scale_param sigmoid_param slice_param softmax_param spp_param
            swish_param tanh_param threshold_param tile_param top transform_param type
            window_data_param""".split()),
    "transform_param": set("crop_size force_color force_gray mean_file mean_value mirror scale".split()),
    "loss_param": set("ignore_label normalization normalize".split()),
    "accuracy_param": set("axis ignore_label top_k".split()),
    "argmax_param": set("axis out_max_val top_k".split()),
    "batch_norm_param": set("eps moving_average_fraction use_global_stats".split()),
    "bias_param": set("axis filler num_axes".split()),
    "clip_param": set("max min".split()),
    "concat_param": set("axis concat_dim".split()),
    "contrastive_loss_param": set("legacy_version margin".split()),
    "convolution_param": set("""axis bias_filler bias_term dilation engine force_nd_im2col group kernel_h kernel_size
            kernel_w num_output pad pad_h pad_w stride stride_h stride_w weight_filler""".split()),
    "crop_param": set("axis offset".split()),
    "data_param": set("""backend batch_size crop_size force_encoded_color mean_file mirror prefetch rand_skip scale
            source""".split()),
    "dropout_param": set("dropout_ratio".split()),
    "dummy_data_param": set("channels data_filler height num shape width".split()),
    "eltwise_param": set("coeff operation stable_prod_grad".split()),
    "elu_param": set("alpha".split()),
    "embed_param": set("bias_filler bias_term input_dim num_output weight_filler".split()),
    "exp_param": set("base scale shift".split()),
    "flatten_param": set("axis end_axis".split()),
    "hdf5_data_param": set("batch_size shuffle source".split()),
    "hdf5_output_param": set("file_name".split()),
    "hinge_loss_param": set("norm".split()),
    "image_data_param": set("""batch_size crop_size is_color mean_file mirror new_height new_width rand_skip root_folder
            scale shuffle source""".split()),
    "infogain_loss_param": set("axis source".split()),
    "inner_product_param": set("axis bias_filler bias_term num_output transpose weight_filler".split()),
    "input_param": set("shape".split()),
    "log_param": set("base scale shift".split()),
    "lrn_param": set("alpha beta engine k local_size norm_region".split()),
    "memory_data_param": set("batch_size channels height width".split()),
    "mvn_param": set("across_channels eps normalize_variance".split()),
    "parameter_param": set("shape".split()),
    "pooling_param": set("""engine global_pooling kernel_h kernel_size kernel_w pad pad_h pad_w pool round_mode stride
            stride_h stride_w""".split()),
    "power_param": set("power scale shift".split()),
    "prelu_param": set("channel_shared filler".split()),
    "python_param": set("layer module param_str share_in_parallel".split()),
    "recurrent_param": set("bias_filler debug_info expose_hidden num_output weight_filler".split()),
    "reduction_param": set("axis coeff operation".split()),
    "relu_param": set("engine negative_slope".split()),
    "reshape_param": set("axis num_axes shape".split()),
    "scale_param": set("axis bias_filler bias_term filler num_axes".split()),
    "sigmoid_param": set("engine".split()),
    "softmax_param": set("axis engine".split()),
    "spp_param": set("engine pool pyramid_height".split()),
    "slice_param": set("axis slice_dim slice_point".split()),
    "swish_param": set("beta".split()),
    "tanh_param": set("engine".split()),
    "threshold_param": set("threshold".split()),
    "tile_param": set("axis tiles".split()),
    "window_data_param": set("""batch_size bg_threshold cache_images context_pad crop_mode crop_size fg_fraction
            fg_threshold mean_file mirror root_folder scale source""".split()),
}
# The well-known fork fields that shape inference implements (and validation translates).
FORK_FIELDS = {"pooling_param": {"ceil_mode"}}


def unknown_fields(layer):
    """The fields of `layer` (as "field" or "message.field") that neither Caffe 1.0 nor FORK_FIELDS
    knows; nested messages such as fillers are not looked into."""
    found = []
    for key, value in layer.fields:
        if key not in CAFFE_FIELDS["layer"]:
            found.append(key)
        elif key in CAFFE_FIELDS and type(value) is Message:
            known = CAFFE_FIELDS[key] | FORK_FIELDS.get(key, set())
            found += ["%s.%s" % (key, inner) for inner, _ in value.fields if inner not in known]
    return list(dict.fromkeys(found))


def _one_typo(a, b):
    """`a` is `b` with one letter changed, added or dropped, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a[i + 1:] == b[i + 1:] or a[i:] == b[i + 1:] or a[i + 1:] == b[i:] \
        or a[i + 1:i + 2] + a[i:i + 1] + a[i + 2:] == b[i:]


def check_typos(net):
    """Refuse a field one typo from one Caffe knows (`num_outptu`) when every field of the net that
    Caffe does not know is such a typo: Caffe would reject the net for them alone. A fork's net,
    with fields nothing here knows, is carried through as it is."""
    typos = []
    for layer in net.get_all("layer"):
        for field in unknown_fields(layer):
            message, _, name = field.rpartition(".")
            near = sorted(known for known in CAFFE_FIELDS[message or "layer"] if _one_typo(name, known))
            if not near:
                return
            typos.append("layer '%s': %s has no field %s (Caffe would reject the net); did you mean %s?"
                         % (clip(str(layer.get("name", ""))), message or "a layer", name, " or ".join(near)))
    if typos:
        raise ConfigError(typos[0])


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
    return clip(text)


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
