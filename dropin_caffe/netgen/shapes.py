"""Blob shapes and parameter counts of a Caffe net, worked out from its prototxt tree alone.

`infer(net, phase)` walks the layers Caffe keeps in that phase (`phase_net`) in order and gives
every top blob the shape Caffe 1.0 would give it, following Caffe's own rules (read from its
layer sources, checked against `caffe.Net` in the tests):

- Convolution: out = (in + 2 pad - (dilation (kernel - 1) + 1)) // stride + 1 per spatial axis;
  Deconvolution: out = stride (in - 1) + dilation (kernel - 1) + 1 - 2 pad.
- Pooling: out = ceil((in + 2 pad - kernel) / stride) + 1 (floor with `round_mode: FLOOR`, or
  the forks' `ceil_mode: false`), one less when pad > 0 and the last window would start at or
  beyond in + pad; global pooling 1x1.
- Data layers: Input and DummyData declare their shapes; MemoryData, WindowData and ImageData
  (with a crop or new_height/new_width) imply them; Data and HDF5Data read them from a database,
  so their data tops are unknown unless given in `input_shapes` (labels are (batch,)).

Each layer also gets its number of parameter values (what Caffe stores for it: weights and
biases, BatchNorm's 2C + 1 statistics, DropIn's 2-value iteration counter).

Nothing is guessed. A layer type without a rule in `RULES` (or a Python layer other than our
DropIn and Resize) leaves its tops unknown (None), unless it works in place (a blob it reads and
writes keeps its shape), and so does every layer downstream of an unknown blob. So does a field
Caffe 1.0 does not know (a fork's, other than Pooling's ceil_mode), with a note naming it.
`require` turns an unknown shape that a rewrite needs into a message saying how to give it.
Shapes Caffe could not build (a kernel larger than its padded input, Eltwise or Concat inputs
that disagree, ...) raise ConfigError naming the layer, the rule and the shapes received.
Where Caffe would quietly build something meaningless (a 4x4 kernel with stride 2 on a 3x3
input gets output 1x1 from C++ integer division), we refuse instead.
"""
import re
import typing

from .. import params
from ..errors import ConfigError
from .prototxt import Message
from .upgrade import upgrade_net
from .vocabulary import DATA_TYPES, ELEMENTWISE, LOSSES, SOURCE_PARAMS, check_structure, our_layer, unknown_fields
from .vocabulary import phase as _phase


class LayerShapes(typing.NamedTuple):
    """One layer as inference saw it: `bottoms` and `tops` are lists of (blob name, shape), a
    shape being a tuple or None (unknown); `params` is its number of parameter values (its
    blobs' sizes added up; None = unknown)."""
    name: str
    type: str
    bottoms: list
    tops: list
    params: typing.Optional[int]


# ---------------------------------------------------------------------------------------------
# Phases (Caffe's Net::FilterNet and StateMeetsRule)

def _meets(rule, phase, level, stages):
    if "phase" in rule and str(rule.get("phase")) != phase:
        return False
    if "min_level" in rule and level < rule.get("min_level"):
        return False
    if "max_level" in rule and level > rule.get("max_level"):
        return False
    if any(stage not in stages for stage in rule.get_all("stage")):
        return False
    return not any(stage in stages for stage in rule.get_all("not_stage"))


def _kept(layer, phase, level, stages):
    """Caffe's rule: no include rules means kept unless an exclude rule is met; any met include
    rule keeps the layer (includes are checked last, so they win)."""
    kept = not layer.get_all("include")
    if any(_meets(rule, phase, level, stages) for rule in layer.get_all("exclude")):
        kept = False
    if any(_meets(rule, phase, level, stages) for rule in layer.get_all("include")):
        kept = True
    return kept


def phase_net(net, phase, stages=(), level=0):
    """A copy of `net` with only the layers Caffe keeps in `phase` ("TRAIN" or "TEST").

    Like pycaffe's `caffe.Net(file, phase, level, stages)`: the net's own `state` stages count
    too, its level and phase are replaced by ours.
    """
    keep = keeper(net, phase, stages, level)
    kept = net.copy()
    kept.fields = [field for field in kept.fields if field[0] != "layer" or keep(field[1])]
    return kept


def keeper(net, phase, stages, level):
    """Whether Caffe keeps a layer of `net` in `phase` (see phase_net)."""
    phase = _phase(phase)
    state = net.get("state")
    stages = set(stages) | set(state.get_all("stage") if state is not None else ())
    return lambda layer: _kept(layer, phase, level, stages)


# ---------------------------------------------------------------------------------------------
# Reading parameters

class _Layer:
    """A layer being inferred: its tree, its bottoms' shapes, and how messages name it."""

    def __init__(self, tree, bottoms, index):
        self.tree = tree
        self.name = str(tree.get("name", ""))
        self.type = str(tree.get("type", ""))
        self.bottoms = bottoms
        self.tops = [str(top) for top in tree.get_all("top")]
        # A nameless layer is named by its position among the net's `layer`s, counting from 1.
        self.label = "%s '%s'" % (self.type, self.name) if self.name else "%s layer #%d" % (self.type, index)

    def fail(self, rule):
        return ConfigError("%s: %s" % (self.label, rule))

    def param(self, name):
        value = self.tree.get(name)
        return type(self.tree)() if value is None else value

    def number(self, message, key, default=None, minimum=0):
        """An integer field (minimum None: any integer); `default` None means required."""
        value = message.get(key, default)
        if value is None:
            raise self.fail('needs "%s"' % key)
        return self._checked(key, value, minimum)

    def numbers(self, message, key, minimum=0):
        return [self._checked(key, value, minimum) for value in message.get_all(key)]

    def _checked(self, key, value, minimum):
        if type(value) is not int or (minimum is not None and value < minimum):
            raise self.fail('"%s" must be an integer%s, got %r'
                            % (key, "" if minimum is None else " >= %d" % minimum, value))
        return value

    def flag(self, message, key, default):
        value = message.get(key, default)
        if type(value) is int and value in (0, 1):
            value = bool(value)
        if type(value) is not bool:
            raise self.fail('"%s" must be true or false, got %r' % (key, value))
        return value

    def axis(self, message, key, default, num_axes):
        """Caffe's CanonicalAxisIndex: -num_axes <= axis < num_axes, negative counting from the end."""
        value = message.get(key, default)
        if type(value) is not int or not -num_axes <= value < num_axes:
            raise self.fail('"%s" must be an axis of the %d-axis bottom %s, got %r'
                            % (key, num_axes, _text(self.bottoms[0]), value))
        return value + num_axes if value < 0 else value

    def count(self, what, allowed, got):
        if got not in allowed:
            raise self.fail("takes %s %s, got %d" % (" or ".join(map(str, allowed)), what, got))


def _text(shape):
    return "unknown" if shape is None else "(%s)" % ", ".join(map(str, shape))


def _product(values):
    result = 1
    for value in values:
        result *= value
    return result


def _blob_shape(layer, message):
    if type(message) is not Message:
        raise layer.fail('"shape" must be a message `shape { dim: 1 dim: 3 ... }`, got %r' % (message,))
    dims = message.get_all("dim")
    if any(type(dim) is not int or dim < 0 for dim in dims):
        raise layer.fail("shape dims must be integers >= 0, got %s" % (dims,))
    return tuple(dims)


# ---------------------------------------------------------------------------------------------
# Rules. Each takes a _Layer whose bottoms are known and returns (top shapes, parameter count).

def _same_shape(layer):
    return [layer.bottoms[0]] * len(layer.tops), 0


def _spatial(layer, param, key, n, default):
    """kernel_size/pad/stride/dilation: repeated (one value, or one per spatial axis) or _h/_w."""
    values = layer.numbers(param, key, 1 if key in ("kernel_size", "stride", "dilation") else 0)
    if key != "dilation":
        stem = key.split("_")[0]
        pair = [stem + "_h", stem + "_w"]
        if any(name in param for name in pair):
            if n != 2 or values or not all(name in param for name in pair):
                raise layer.fail("%s_h and %s_w go together, for 2 spatial axes, without %s; got %s"
                                 % (stem, stem, key, ", ".join(name for name in [key] + pair if name in param)))
            return [layer.number(param, name, None, 1 if stem != "pad" else 0) for name in pair]
    if not values:
        if default is None:
            raise layer.fail('needs "%s" (or %s_h and %s_w)' % (key, key.split("_")[0], key.split("_")[0]))
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise layer.fail('"%s" takes 1 or %d values (one per spatial axis), got %d' % (key, n, len(values)))
    return values


def _convolution(layer):
    param = layer.param("convolution_param")
    shape = layer.bottoms[0]
    axis = layer.axis(param, "axis", 1, len(shape))
    n = len(shape) - axis - 1
    if n < 1:
        raise layer.fail("needs spatial axes after the channel axis %d, got bottom %s" % (axis, _text(shape)))
    if any(bottom != shape for bottom in layer.bottoms):
        raise layer.fail("all bottoms must have the same shape, got %s" % ", ".join(map(_text, layer.bottoms)))
    outputs = layer.number(param, "num_output", None, 1)
    group = layer.number(param, "group", 1, 1)
    kernel = _spatial(layer, param, "kernel_size", n, None)
    pad = _spatial(layer, param, "pad", n, 0)
    stride = _spatial(layer, param, "stride", n, 1)
    dilation = _spatial(layer, param, "dilation", n, 1)
    channels = shape[axis]
    if channels % group or outputs % group:
        raise layer.fail("input channels (%d) and num_output (%d) must both be multiples of group (%d)"
                         % (channels, outputs, group))
    deconv = layer.type == "Deconvolution"
    spatial = []
    for i in range(n):
        size, extent = shape[axis + 1 + i], dilation[i] * (kernel[i] - 1) + 1
        if deconv:
            out = stride[i] * (size - 1) + extent - 2 * pad[i]
        else:
            if size + 2 * pad[i] < extent:
                raise layer.fail("kernel extent %d (kernel %d, dilation %d) is larger than the padded input "
                                 "%d + 2 x %d on axis %d of bottom %s; use a smaller kernel or more padding"
                                 % (extent, kernel[i], dilation[i], size, pad[i], axis + 1 + i, _text(shape)))
            out = (size + 2 * pad[i] - extent) // stride[i] + 1
        if out < 1:
            raise layer.fail("output size %d on axis %d from bottom %s; check kernel, pad and stride"
                             % (out, axis + 1 + i, _text(shape)))
        spatial.append(out)
    weights = (channels if deconv else outputs) * ((outputs if deconv else channels) // group) * _product(kernel)
    bias = outputs if layer.flag(param, "bias_term", True) else 0
    return [shape[:axis] + (outputs,) + tuple(spatial)] * len(layer.tops), weights + bias


def _pooling(layer):
    param = layer.param("pooling_param")
    shape = layer.bottoms[0]
    if len(shape) != 4:
        raise layer.fail("needs a 4-axis bottom (N, C, H, W), got %s" % _text(shape))
    if layer.flag(param, "global_pooling", False):
        return [shape[:2] + (1, 1)] * len(layer.tops), 0
    kernel = _single_or_pair(layer, param, "kernel_size", None)
    pad = _single_or_pair(layer, param, "pad", 0)
    stride = _single_or_pair(layer, param, "stride", 1)
    if "round_mode" in param or "ceil_mode" not in param:
        ceil = str(param.get("round_mode", "CEIL")) == "CEIL"
    else:  # the forks' field for the same choice (Caffe 1.0 has round_mode)
        ceil = layer.flag(param, "ceil_mode", True)
    spatial = []
    for i in range(2):
        size = shape[2 + i]
        if pad[i] >= kernel[i]:
            raise layer.fail("pad (%d) must be smaller than the kernel (%d)" % (pad[i], kernel[i]))
        if size + 2 * pad[i] < kernel[i]:
            raise layer.fail("kernel %d is larger than the padded input %d + 2 x %d on axis %d of bottom %s"
                             % (kernel[i], size, pad[i], 2 + i, _text(shape)))
        span = size + 2 * pad[i] - kernel[i]
        out = (-(-span // stride[i]) if ceil else span // stride[i]) + 1
        if pad[i] and (out - 1) * stride[i] >= size + pad[i]:
            out -= 1  # Caffe drops a last window that would start in the padding
        spatial.append(out)
    return [shape[:2] + tuple(spatial)] * len(layer.tops), 0


def _single_or_pair(layer, param, key, default):
    """Pooling's kernel_size/pad/stride are single values, or key_h and key_w."""
    stem = key.split("_")[0]
    if stem + "_h" in param or stem + "_w" in param:
        if key in param:
            raise layer.fail("give %s or %s_h and %s_w, not both" % (key, stem, stem))
        return [layer.number(param, stem + suffix, None, 0 if stem == "pad" else 1) for suffix in ("_h", "_w")]
    return [layer.number(param, key, default, 0 if stem == "pad" else 1)] * 2


def _inner_product(layer):
    param = layer.param("inner_product_param")
    shape = layer.bottoms[0]
    axis = layer.axis(param, "axis", 1, len(shape))
    outputs = layer.number(param, "num_output", None, 1)
    inputs = _product(shape[axis:])
    bias = outputs if layer.flag(param, "bias_term", True) else 0
    return [shape[:axis] + (outputs,)], inputs * outputs + bias


def _embed(layer):
    param = layer.param("embed_param")
    outputs = layer.number(param, "num_output", None, 1)
    inputs = layer.number(param, "input_dim", None, 1)
    bias = outputs if layer.flag(param, "bias_term", True) else 0
    return [layer.bottoms[0] + (outputs,)], inputs * outputs + bias


def _prelu(layer):
    shape = layer.bottoms[0]
    if len(shape) < 2:
        raise layer.fail("needs a bottom with a channel axis, got %s" % _text(shape))
    shared = layer.flag(layer.param("prelu_param"), "channel_shared", False)
    return [shape], 1 if shared else shape[1]


def _batch_norm(layer):
    shape = layer.bottoms[0]
    channels = shape[1] if len(shape) > 1 else 1
    return [shape], 2 * channels + 1  # mean, variance, moving-average factor


def _scale_or_bias(layer):
    """Scale and Bias: a learned blob of shape bottom[axis : axis + num_axes], or one from a
    second bottom (then nothing is learned, except Scale's bias_term)."""
    param = layer.param("scale_param" if layer.type == "Scale" else "bias_param")
    shape = layer.bottoms[0]
    layer.count("bottoms", (1, 2), len(layer.bottoms))
    axis = layer.axis(param, "axis", 1, len(shape))
    if len(layer.bottoms) == 2:
        other = layer.bottoms[1]
        if tuple(shape[axis:axis + len(other)]) != other:
            raise layer.fail("the second bottom %s must match the first bottom %s from axis %d"
                             % (_text(other), _text(shape), axis))
        learned, extra = 0, _product(other)
    else:
        num_axes = param.get("num_axes", 1)
        if type(num_axes) is not int or num_axes < -1 or axis + num_axes > len(shape):
            raise layer.fail('"num_axes" must be -1 or fit the bottom %s from axis %d, got %r'
                             % (_text(shape), axis, num_axes))
        learned = extra = _product(shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes])
    if layer.type == "Bias":
        return [shape], learned
    return [shape], learned + (extra if layer.flag(param, "bias_term", False) else 0)


def _eltwise(layer):
    shape = layer.bottoms[0]
    if any(bottom != shape for bottom in layer.bottoms):
        raise layer.fail("all bottoms must have the same shape, got %s" % ", ".join(map(_text, layer.bottoms)))
    return [shape], 0


def _legacy_axis(layer, param, legacy):
    if legacy in param:
        return layer.number(param, legacy, None, 0)
    return layer.axis(param, "axis", 1, len(layer.bottoms[0]))


def _concat(layer):
    param = layer.param("concat_param")
    axis = _legacy_axis(layer, param, "concat_dim")
    first = layer.bottoms[0]
    for bottom in layer.bottoms:
        if len(bottom) != len(first) or axis >= len(first) or \
                bottom[:axis] + bottom[axis + 1:] != first[:axis] + first[axis + 1:]:
            raise layer.fail("bottoms must agree on every axis but the concatenation axis %d, got %s"
                             % (axis, ", ".join(map(_text, layer.bottoms))))
    return [first[:axis] + (sum(bottom[axis] for bottom in layer.bottoms),) + first[axis + 1:]], 0


def _slice(layer):
    param = layer.param("slice_param")
    shape = layer.bottoms[0]
    axis = _legacy_axis(layer, param, "slice_dim")
    if axis >= len(shape):
        raise layer.fail("slice axis %d is not an axis of bottom %s" % (axis, _text(shape)))
    size, count = shape[axis], len(layer.tops)
    points = layer.numbers(param, "slice_point", 1)
    if points:
        if len(points) != count - 1 or points != sorted(set(points)) or points[-1] >= size:
            raise layer.fail("slice_point must give %d increasing points inside (0, %d) for %d tops, got %s"
                             % (count - 1, size, count, points))
        edges = [0] + points + [size]
        sizes = [b - a for a, b in zip(edges, edges[1:])]
    else:
        if size % count:
            raise layer.fail("axis %d of bottom %s (%d) does not split evenly into %d tops; give slice_point"
                             % (axis, _text(shape), size, count))
        sizes = [size // count] * count
    return [shape[:axis] + (part,) + shape[axis + 1:] for part in sizes], 0


def _flatten(layer):
    param = layer.param("flatten_param")
    shape = layer.bottoms[0]
    start = layer.axis(param, "axis", 1, len(shape))
    end = layer.axis(param, "end_axis", -1, len(shape))
    if end < start:
        raise layer.fail("end_axis %d comes before axis %d" % (end, start))
    return [shape[:start] + (_product(shape[start:end + 1]),) + shape[end + 1:]], 0


def _reshape(layer):
    """Caffe's Reshape: dims replace bottom axes [axis, axis + num_axes); 0 copies the bottom's
    dim at that place, -1 (once) takes whatever makes the counts agree."""
    param = layer.param("reshape_param")
    shape = layer.bottoms[0]
    target = param.get("shape")
    dims = target.get_all("dim") if target is not None else []
    if any(type(dim) is not int or dim < -1 for dim in dims) or dims.count(-1) > 1:
        raise layer.fail("shape dims must be integers >= -1, with at most one -1, got %s" % (dims,))
    axis = layer.number(param, "axis", 0, None)
    num_axes = layer.number(param, "num_axes", -1, -1)
    # Unlike other layers, Reshape's axis -1 means "after the last axis".
    start = axis if axis >= 0 else len(shape) + axis + 1
    end = len(shape) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(shape):
        raise layer.fail("axis %d and num_axes %d do not select axes of bottom %s" % (axis, num_axes, _text(shape)))
    new = []
    for i, dim in enumerate(dims):
        if dim == 0:
            if start + i >= len(shape):
                raise layer.fail("dim %d is 0 (copy) but bottom %s has no axis %d" % (i, _text(shape), start + i))
            dim = shape[start + i]
        new.append(dim)
    known = _product(dim for dim in new if dim != -1) * _product(shape[:start]) * _product(shape[end:])
    total = _product(shape)
    if -1 in new:
        if known == 0 or total % known:
            raise layer.fail("cannot infer the -1 dim: %d values of bottom %s are not a multiple of %d"
                             % (total, _text(shape), known))
        new[new.index(-1)] = total // known
    top = shape[:start] + tuple(new) + shape[end:]
    if _product(top) != total:
        raise layer.fail("top %s must hold as many values as bottom %s (%d), got %d"
                         % (_text(top), _text(shape), total, _product(top)))
    return [top], 0


def _crop(layer):
    param = layer.param("crop_param")
    layer.count("bottoms (the blob and one of the target shape)", (2,), len(layer.bottoms))
    shape, like = layer.bottoms
    if len(shape) != len(like):
        raise layer.fail("both bottoms need as many axes, got %s and %s" % (_text(shape), _text(like)))
    axis = layer.axis(param, "axis", 2, len(shape))
    offsets = layer.numbers(param, "offset", 0)
    cropped = len(shape) - axis
    if len(offsets) not in (0, 1, cropped):
        raise layer.fail("offset takes 0, 1 or %d values, got %d" % (cropped, len(offsets)))
    offsets = offsets * cropped if len(offsets) == 1 else offsets or [0] * cropped
    for i, offset in enumerate(offsets):
        if offset + like[axis + i] > shape[axis + i]:
            raise layer.fail("cropping %d from offset %d on axis %d needs bottom %s to be larger"
                             % (like[axis + i], offset, axis + i, _text(shape)))
    return [shape[:axis] + like[axis:]], 0


def _loss(layer):
    scores = layer.bottoms[0]
    if layer.type == "SoftmaxWithLoss" and len(layer.tops) > 1:
        # Its inner Softmax copies the loss weights but has one top: Caffe aborts either way.
        raise layer.fail("Caffe cannot build a SoftmaxWithLoss with a second top; compute the "
                         "probabilities with a separate Softmax layer")
    if layer.type in ("SoftmaxWithLoss", "InfogainLoss") and len(layer.bottoms) > 1:
        _check_labels(layer, layer.param("softmax_param"), scores, layer.bottoms[1])
    if layer.type == "EuclideanLoss" and _product(scores[1:]) != _product(layer.bottoms[1][1:]):
        raise layer.fail("both bottoms need the same size per sample, got %s and %s"
                         % (_text(scores), _text(layer.bottoms[1])))
    # Caffe gives a loss layer without tops an anonymous one; InfogainLoss may add probabilities.
    tops = [(), scores if layer.type == "InfogainLoss" else None]
    return (tops + [None] * len(layer.tops))[:len(layer.tops)], 0


def _check_labels(layer, param, scores, labels):
    axis = layer.axis(param, "axis", 1, len(scores))
    expected = _product(scores[:axis]) * _product(scores[axis + 1:])
    if _product(labels) != expected:
        raise layer.fail("needs one label per prediction: %d for scores %s (class axis %d), got labels %s"
                         % (expected, _text(scores), axis, _text(labels)))


def _accuracy(layer):
    param = layer.param("accuracy_param")
    scores = layer.bottoms[0]
    _check_labels(layer, param, scores, layer.bottoms[1])
    axis = layer.axis(param, "axis", 1, len(scores))
    return [(), (scores[axis],)][:len(layer.tops)], 0


def _reduction(layer):
    shape = layer.bottoms[0]
    return [shape[:layer.axis(layer.param("reduction_param"), "axis", 0, len(shape))]], 0


def _tile(layer):
    param = layer.param("tile_param")
    shape = layer.bottoms[0]
    axis = layer.axis(param, "axis", 1, len(shape))
    return [shape[:axis] + (shape[axis] * layer.number(param, "tiles", None, 1),) + shape[axis + 1:]], 0


def _silence(layer):
    return [], 0


def _ours(layer):
    """Our DropIn and Resize, Python or native (`_inferable` lets no other Python layer through)."""
    param = layer.param("python_param")
    if our_layer(layer.tree) == "DropIn":
        layer.count("bottoms (prev, new)", (2,), len(layer.bottoms))
        prev, new = layer.bottoms
        if prev != new:
            raise layer.fail("DropIn bottoms prev and new must have the same shape, got %s and %s; insert a "
                             "Resize layer to match them" % (_text(prev), _text(new)))
        return [prev, (1,)][:len(layer.tops)], 2  # the parameter blob is its iteration counter
    return _resize(layer, param), 0


def _resize(layer, param):
    config, _ = params.layer_config("Resize", str(param.get("param_str", "")))
    shape = layer.bottoms[0]
    if len(shape) not in (2, 4):
        raise layer.fail("Resize takes (N, C) or (N, C, H, W) bottoms, got %s" % _text(shape))
    if len(layer.bottoms) == 2:
        if len(layer.bottoms[1]) != len(shape):
            raise layer.fail("Resize's second bottom needs as many axes as the first, got %s and %s"
                             % (_text(layer.bottoms[1]), _text(shape)))
        return [shape[:1] + layer.bottoms[1][1:]]
    target = []
    for key, size in zip(("channels", "height", "width"), shape[1:]):
        target.append(config.get(key, size))
    return [shape[:1] + tuple(target)]


RULES = {
    "Convolution": _convolution, "Deconvolution": _convolution, "Pooling": _pooling,
    "InnerProduct": _inner_product, "Embed": _embed, "PReLU": _prelu, "BatchNorm": _batch_norm,
    "Scale": _scale_or_bias, "Bias": _scale_or_bias, "Eltwise": _eltwise, "Concat": _concat,
    "Slice": _slice, "Split": _same_shape, "Flatten": _flatten, "Reshape": _reshape, "Crop": _crop,
    "Accuracy": _accuracy, "Reduction": _reduction, "Tile": _tile, "Silence": _silence,
    "Python": _ours, "DropIn": _ours, "DropInResize": _ours,
}
RULES.update((kind, _same_shape) for kind in ELEMENTWISE)
RULES.update((kind, _loss) for kind in LOSSES)
PARAMETER_FREE = (ELEMENTWISE | LOSSES | DATA_TYPES |
                  {"Pooling", "Eltwise", "Concat", "Slice", "Split", "Flatten", "Reshape", "Crop", "Accuracy",
                   "Reduction", "Tile", "Silence"})


# ---------------------------------------------------------------------------------------------
# Data layers

def _declared_data(layer, batch):
    """(batch, top shapes) from the data layer's own parameters, None where only its source knows;
    `batch` (when not None) replaces the layer's batch_size."""
    kind, count = layer.type, len(layer.tops)
    if kind == "Input":
        shapes = [_blob_shape(layer, message) for message in layer.param("input_param").get_all("shape")]
        return None, _one_or_each(layer, "shape", shapes, count)
    if kind == "DummyData":
        param = layer.param("dummy_data_param")
        shapes = [_blob_shape(layer, message) for message in param.get_all("shape")]
        legacy = [layer.numbers(param, key, 0) for key in ("num", "channels", "height", "width")]
        if any(legacy):
            if shapes:
                raise layer.fail("give shape or num/channels/height/width, not both")
            columns = [_one_or_each(layer, key, values, count)
                       for key, values in zip(("num", "channels", "height", "width"), legacy)]
            return None, [tuple(column[i] for column in columns) for i in range(count)]
        return None, _one_or_each(layer, "shape", shapes, count)
    param = layer.param(SOURCE_PARAMS[kind])
    if batch is None:
        batch = layer.number(param, "batch_size", 1 if kind in ("ImageData", "MemoryData") else None, 1)
    crop = layer.number(layer.param("transform_param"), "crop_size", 0, 0)
    if kind == "HDF5Data":
        return batch, [None] * count
    if kind == "MemoryData":
        data = (batch,) + tuple(layer.number(param, key, None, 1) for key in ("channels", "height", "width"))
    elif kind == "WindowData":
        if not crop:
            raise layer.fail("needs transform_param { crop_size } (WindowData warps windows to that size)")
        data = (batch, 3, crop, crop)
    elif kind == "ImageData":
        channels = 3 if layer.flag(param, "is_color", True) else 1
        height, width = (layer.number(param, key, 0, 0) for key in ("new_height", "new_width"))
        size = (crop, crop) if crop else (height, width) if height and width else (None, None)
        data = (batch, channels) + size
    else:  # Data: channels and size are in the database; a crop fixes the size
        data = (batch, None) + ((crop, crop) if crop else (None, None))
    return batch, [data, (batch,)][:count] + [None] * (count - 2)


def _one_or_each(layer, key, shapes, count):
    if len(shapes) == 1:
        return shapes * count
    if len(shapes) != count:
        raise layer.fail('gives %d "%s" for %d tops; give one for all or one per top' % (len(shapes), key, count))
    return shapes


def _data(layer, given, notes):
    """Data tops: the declared shapes, with `given` (input_shapes) filling in and overriding the
    batch. A given shape must agree with every dim the layer declares, except the batch; an Input
    layer's declared shape (often a placeholder the application resizes) gives way, with a note."""
    first = given.get(layer.tops[0]) if layer.tops else None
    override = first[0] if first is not None and len(first) != 3 else None
    batch, declared = _declared_data(layer, override)
    shapes = []
    for top, shape in zip(layer.tops, declared):
        wanted = given.get(top)
        if wanted is not None and len(wanted) == 3:  # (C, H, W): one image; the batch is the layer's own
            own = batch if batch is not None else (shape[0] if shape else None)
            wanted = _one_image(layer, top, wanted, own, notes)
        if wanted is None:
            shapes.append(shape if shape is not None and None not in shape else None)
            continue
        disagrees = shape is not None and (len(shape) != len(wanted) or
                                           any(d is not None and d != w for d, w in zip(shape[1:], wanted[1:])))
        if disagrees and layer.type == "Input":  # a declared input is often a placeholder the application resizes
            notes.append("--input-shape %s=%s replaces the shape %s that %s declares in the summary, the "
                         "validation and the drawing; the emitted net keeps its declaration" % (
                top, ",".join(map(str, wanted)), _text(shape), layer.label))
        elif disagrees:
            raise layer.fail("input shape %s for top '%s' disagrees with the layer's own %s (? = read from the "
                             "source); give a shape that agrees" % (_text(wanted), top, _text_partial(shape)))
        shapes.append(wanted)
    return shapes


def replaced_input(layer, shapes):
    """The shapes Input `layer` (a tree) declares, one per top, when `shapes` (inferred with
    --input-shape) replace them beyond the batch, which the comparison with Caffe checks; else None."""
    if str(layer.get("type")) != "Input":
        return None
    tops = [str(top) for top in layer.get_all("top")]
    declared = [tuple(shape.get_all("dim")) for shape in (layer.get("input_param") or Message()).get_all("shape")]
    declared = declared * len(tops) if len(declared) == 1 else declared
    inferred = [shapes.get(top) for top in tops]
    replaced = None not in inferred and (len(declared) != len(inferred) or any(
        len(d) != len(i) or d[1:] != i[1:] for d, i in zip(declared, inferred)))
    return declared if replaced else None


def _one_image(layer, top, wanted, batch, notes):
    """A given (C, H, W) as (N, C, H, W): N is `batch` (the layer's own), else 1, with a note."""
    if batch is None:
        batch = 1
        notes.append("--input-shape %s=%s: %s does not say its batch size, so the batch is 1; give N,C,H,W to "
                     "choose it" % (top, ",".join(map(str, wanted)), layer.label))
    return (batch,) + tuple(wanted)


def _layer_batch(layer):
    """The batch size a layer of a type we cannot infer declares: its bottom's first dim, a
    `batch_size` in one of its *_param messages, or "batch_size" in a Python layer's param_str."""
    if layer.bottoms and layer.bottoms[0]:
        return layer.bottoms[0][0]
    for key, value in layer.tree.fields:
        if key.endswith("_param") and type(value) is Message:
            size = value.get("batch_size")
            if type(size) is int and size >= 1:
                return size
            found = re.search(r"""["']?batch_size["']?\s*[:=]\s*(\d+)""", str(value.get("param_str", "")))
            if found and int(found.group(1)) >= 1:
                return int(found.group(1))
    return None


def _text_partial(shape):
    return "(%s)" % ", ".join("?" if d is None else str(d) for d in shape)


def _input_shapes(input_shapes):
    checked = {}
    for blob, shape in (input_shapes or {}).items():
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
        if not isinstance(shape, tuple) or not shape or any(type(d) is not int or d < 1 for d in shape):
            raise ConfigError("input shape of '%s' must be a list of integers >= 1 such as 3,224,224, got %r"
                              % (blob, shape))
        checked[str(blob)] = shape
    return checked


# ---------------------------------------------------------------------------------------------
# The walk

def infer(net, phase="TRAIN", input_shapes=None, stages=(), notes=None):
    """Shapes of every blob of `net` in `phase`, and what each layer makes of them.

    `input_shapes` maps a top name to a shape: for a data layer whose shapes live in its source
    (Data, HDF5Data) or to override its batch, or for a layer of a type we cannot infer. A
    3-tuple (C, H, W) is one image: it gets the layer's batch prepended (its batch_size, its
    declared shape's, its bottom's), else batch 1 with a note; a full shape's first dim becomes
    the layer's batch (its label top follows). `stages` as for phase_net. `notes`, a list, gets
    one line for each choice the user should know about.

    Returns (shapes, layers): shapes maps each blob to a tuple or None (unknown), as it is after
    the last layer that writes it; layers is a list of LayerShapes in net order.
    """
    if net.get_all("layers"):
        raise ConfigError("net: this is an old V1 net (`layers {}`); upgrade it first "
                          "(dropin_caffe.netgen.upgrade.upgrade_net, or Caffe's upgrade_net_proto_text)")
    check_structure(net)
    given = _input_shapes(input_shapes)
    notes = notes if notes is not None else []
    declared = len(net.get_all("layer"))
    if "input" in net:  # the deprecated net-level inputs, as the Input layer Caffe makes of them
        net = upgrade_net(net)
    # (position in the user's net, counting from 1, tree) of the layers kept in this phase; the
    # Input layer made of net-level inputs comes before layer #1.
    keep, added = keeper(net, phase, stages, 0), len(net.get_all("layer")) - declared
    kept = [(index - added, tree) for index, tree in enumerate(net.get_all("layer"), 1) if keep(tree)]
    trees = [tree for _, tree in kept]
    settable = {str(top) for tree in net.get_all("layer") + trees if not _inferable(tree)
                for top in tree.get_all("top")}
    unused = sorted(set(given) - settable)
    if unused:
        raise ConfigError("input shapes given for %s, which no data layer (or layer of a type we cannot infer) "
                          "makes; such tops: %s" % (", ".join(unused), ", ".join(sorted(settable)) or "none"))
    shapes, layers = {}, []
    for index, tree in kept:
        bottoms = [str(bottom) for bottom in tree.get_all("bottom")]
        layer = _Layer(tree, [shapes.get(bottom) for bottom in bottoms], index)
        for bottom in bottoms:
            if bottom not in shapes:
                raise layer.fail("bottom '%s' is not the top of an earlier layer in phase %s; check its "
                                 "name and the include/exclude rules" % (bottom, _phase(phase)))
        tops, params = _apply(layer, given, notes)
        for top, shape in zip(layer.tops, tops):
            _check_count(layer, top, shape)
        shapes.update(zip(layer.tops, tops))
        layers.append(LayerShapes(layer.name, layer.type, list(zip(bottoms, layer.bottoms)),
                                  list(zip(layer.tops, tops)), params))
    return shapes, layers


def _check_count(layer, top, shape):
    """Refuse a top Caffe could not hold: its Blob::Reshape CHECKs every dimension and the element
    count against INT_MAX and aborts the whole process."""
    if shape is None:
        return
    count = _product(shape)
    if count > params.INT_MAX or any(dim > params.INT_MAX for dim in shape):
        shown = _text(shape)
        shown = shown if len(shown) <= 60 else shown[:56] + "...)"
        raise layer.fail("top '%s' would have shape %s, more than Caffe's limit of INT_MAX = %d elements; make "
                         "it smaller" % (top, shown, params.INT_MAX))


def _inferable(tree):
    """False for data layers and for layers whose type (or Python module) we do not know."""
    kind = str(tree.get("type", ""))
    if kind == "Python":
        return our_layer(tree) is not None
    return kind in RULES and kind not in DATA_TYPES


def _apply(layer, given, notes):
    weights = len(layer.tree.get_all("loss_weight"))
    if (weights or (layer.type in LOSSES and len(layer.tops) > 1)) and weights != len(layer.tops):
        raise layer.fail("needs one loss_weight per top (%d), got %d; give e.g. loss_weight: 1 loss_weight: 0"
                         % (len(layer.tops), weights))
    if layer.type in DATA_TYPES:
        return _data(layer, given, notes), 0
    result = None
    if not layer.bottoms and _inferable(layer.tree):
        raise layer.fail('needs a "bottom": it computes its tops from a bottom blob, and has none')
    known = all(shape is not None for shape in layer.bottoms)
    unknown = unknown_fields(layer.tree) if known and _inferable(layer.tree) else []
    if known and _inferable(layer.tree) and not unknown:
        result = RULES[layer.type](layer)
    if result is None:
        params = 0 if layer.type in PARAMETER_FREE else None
        if len(layer.tops) == 1 and layer.tree.get_all("bottom") == layer.tops and layer.bottoms[0] is not None:
            return [layer.bottoms[0]], params  # in place: whatever it computes, the blob keeps its shape
        if unknown:
            notes.append("%s has field %s, which this Caffe does not know (a fork's?): its output and the shapes "
                         "that follow from it are unknown (?)" % (layer.label, ", ".join(unknown)))
            return [None] * len(layer.tops), None
        tops = [given.get(top) for top in layer.tops]
        tops = [_one_image(layer, top, shape, _layer_batch(layer), notes) if shape is not None and len(shape) == 3
                else shape for top, shape in zip(layer.tops, tops)]
        return tops, params
    tops, params = result
    if len(tops) != len(layer.tops):
        raise layer.fail("has %d tops, Caffe's %s makes %d" % (len(layer.tops), layer.type, len(tops)))
    return [None if shape is None else tuple(shape) for shape in tops], params


def require(shapes, layers, blob):
    """The shape of `blob`, or a ConfigError that names the layer where the unknown shape starts
    (a data layer reading its source, or a type we cannot infer) and how to give the shape."""
    if shapes.get(blob) is not None:
        return shapes[blob]
    end, wanted = len(layers), blob
    while True:
        found = [i for i in range(end) if any(top == wanted and shape is None for top, shape in layers[i].tops)]
        if not found:
            raise ConfigError("blob '%s' is not the top of any layer of the net in this phase" % wanted)
        end = found[-1]
        layer = layers[end]
        unknown = [name for name, shape in layer.bottoms if shape is None]
        if not unknown or layer.type in DATA_TYPES:
            break
        wanted = unknown[0]
    if layer.type in DATA_TYPES:
        why = "%s layer '%s' reads it from its source" % (layer.type, layer.name)
    else:
        why = "shape inference does not know layer '%s' of type %s" % (layer.name, layer.type)
    chain = "" if wanted == blob else " (it follows from blob '%s', whose shape is unknown)" % wanted
    raise ConfigError("the shape of blob '%s' is unknown%s: %s; give the shape of '%s' with --input-shape "
                      "%s=C,H,W (or N,C,H,W)" % (blob, chain, why, wanted, wanted))
