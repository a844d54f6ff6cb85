"""Identity starts for replicas (`expand_net --replica-init identity`), written as a .caffemodel.

Net2DeeperNet style (Chen, Goodfellow & Shlens 2016), an alternative to DropIn: each replica
starts as the identity map, so the deeper net first computes what the shallower one does.
A Convolution replica gets weight 1 at the centre tap from its own channel and 0 elsewhere; an
InnerProduct replica the identity matrix; biases 0. The net is exactly the original at step 0
only where the replica's input already passes its copied activation unchanged (a ReLU after a
ReLU'd blob); otherwise, as on lenet-deep where conv2 has no ReLU, relu(x) != x.

Caffe has no identity filler, so the start is a .caffemodel holding the replicas' blobs only:
`caffe train --weights=INIT.caffemodel` loads them (Net::CopyTrainedLayersFrom matches layers by
name and leaves the others to their fillers), and `--weights=TRAINED.caffemodel,INIT.caffemodel`
(Caffe's `train` takes a comma list, loaded in order) adds the original layers' trained weights.
"""
import math

import numpy as np

from ..errors import ConfigError
from .rewrite import known_shape, per_axis

REFUSE = "--replica-init identity: replica '%s' %s, so it cannot start as the identity map; %s"


def identity_weights(net, replicas, shapes, layers=()):
    """{replica name: (type, [weight, bias?])} of the identity start of each of `replicas` (layer
    names in `net`), from the TRAIN blob `shapes` (and `layers`, shapes.infer's, to say where an
    unknown shape starts). Raises ConfigError for a replica whose output cannot equal its input."""
    by_name = {layer.get("name"): layer for layer in net.get_all("layer")}
    return {name: (by_name[name].get("type"), _identity(by_name[name], shapes, layers)) for name in replicas}


def _identity(layer, shapes, layers):
    name, kind = layer.get("name"), layer.get("type")
    shape = shapes.get(layer.get("bottom"))
    if shape is None and layers:  # the error names the blob whose shape is needed
        shape = known_shape((shapes, layers), layer.get("bottom"), "--replica-init identity: replica '%s'" % name)
    if kind == "Convolution":
        param = layer.get("convolution_param")
        outputs, group = int(param.get("num_output")), int(param.get("group", 1))
        kernel = [int(k) for k in per_axis(param, "kernel_size", 0, prefix="kernel")]
        strides = per_axis(param, "stride", 1)
        if any(k % 2 == 0 for k in kernel) or list(strides) != [1, 1]:
            raise ConfigError(REFUSE % (name, "has kernel %s and stride %s (no centre tap, or a changed size)"
                                        % ("x".join(map(str, kernel)), "x".join(map(str, strides))),
                                        "give an odd --replica-kernel"))
        if shape is None or len(shape) != 4 or shape[1] != outputs:
            raise ConfigError(REFUSE % (name, "maps %s channels to %d" % (shape[1] if shape else "unknown", outputs),
                                        "replicate a layer whose output has as many channels as its input"))
        weight = np.zeros((outputs, outputs // group) + tuple(kernel), np.float32)
        channels = np.arange(outputs)
        weight[channels, channels % (outputs // group), kernel[0] // 2, kernel[1] // 2] = 1
    elif kind == "InnerProduct":
        param = layer.get("inner_product_param")
        outputs, axis = int(param.get("num_output")), int(param.get("axis", 1))
        inputs = math.prod(shape[axis:]) if shape is not None else None
        if inputs != outputs:
            raise ConfigError(REFUSE % (name, "maps %s inputs to %d outputs" % (inputs or "unknown", outputs),
                                        "replicate an InnerProduct whose input and output have the same size"))
        weight = np.eye(outputs, dtype=np.float32)
    else:
        raise ConfigError(REFUSE % (name, "is a %s layer" % kind,
                                    "identity starts are for Convolution and InnerProduct replicas"))
    bias = [np.zeros(outputs, np.float32)] if param.get("bias_term", True) not in (False, 0) else []
    return [weight] + bias


def caffemodel(weights):
    """The serialized NetParameter (.caffemodel) holding `weights` ({name: (type, [arrays])}).

    The blobs' values go in as raw little-endian float32 bytes (BlobProto.data is a packed repeated
    float): a zoo model's 100 million values take a second, where protobuf's list extend takes
    minutes and gigabytes of Python floats."""
    try:
        from caffe.proto import caffe_pb2
    except ImportError as error:
        raise ConfigError("writing a .caffemodel needs pycaffe's caffe_pb2 (%s); run under tools/caffe-env"
                          % error) from None
    layers = []
    for name, (kind, arrays) in weights.items():
        parts = [caffe_pb2.LayerParameter(name=name, type=kind).SerializeToString()]
        for array in arrays:
            shape = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=array.shape)).SerializeToString()
            parts.append(_field(7, shape + _field(5, np.ascontiguousarray(array, dtype="<f4").tobytes())))
        layers.append(_field(100, b"".join(parts)))
    return b"".join(layers)


def _field(number, payload):
    """A length-delimited protobuf field (NetParameter.layer = 100, LayerParameter.blobs = 7,
    BlobProto.data = 5): its tag, the payload's length as a varint, the payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
