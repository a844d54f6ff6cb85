"""export_net as a library: a trained DropIn net becomes a stock Caffe net, checked output for output.

    from dropin_caffe import export_net
    exported = export_net("lenet_deep_dropin.prototxt", "snap/lenet_deep_dropin_iter_300.caffemodel")
    print("\\n".join(exported.lines))
    exported.write("out/")   # out/lenet_deep_dropin_deploy.prototxt, out/lenet_deep_dropin_deploy.caffemodel

After training, each layer of ours (Python or native) has an exact stock equivalent:

- DropIn, at the p its counter in WEIGHTS gives (regularize: p_new), in its TEST mode: p = 1 (or
  test "new") is `new`, p = 0 (or test "prev") is `prev` -- the layer goes and its consumers read
  that blob -- and 0 < p < 1 is an Eltwise SUM with coeff (1 - p, p), the TEST expectation. Its p
  top and counter go. Every layer that then no longer reaches an output of the net goes too.
- A finished widening (expand_net --widen at p = 1: a Concat of a conv or fc layer and its extra
  layer, same bottom and geometry, the same per-unit parameter-free followers) becomes the layer
  alone with both parts' outputs, weights and biases stacked.
- Resize is linear with fixed weights: a 1x1 Convolution (InnerProduct for (N, C) blobs) holding
  an identity that truncates or zero-pads the channels, and for H and W a Reshape to (N, C, H*W),
  an InnerProduct with axis 2 holding kron(A_h, A_w) of `kernels.interp_matrix`, and a Reshape
  back. Same numbers to float rounding.

Forms: "deploy" (default: data layers become Input layers of their TEST shapes at `batch`,
TRAIN-only layers, labels and what only labels feed, losses and Accuracy go, SoftmaxWithLoss
becomes Softmax) and "train_val" (data, losses and both phases kept; the fixed layers get
lr_mult 0, decay_mult 0; refused while a DropIn blends, unless allow_blend).

`export_net` builds both nets in Caffe (TEST), feeds the same seeded random inputs and measures
every output of the export against the original (`Export.proof`); nothing is written until
`Export.write`. A DropIn whose top a later layer changes in place while its `new` (or `prev`) is
read again is kept as a Power layer (an exact copy) instead of removed.
"""
import dataclasses
import os
import sys
import typing

import numpy as np

from .. import env, files, kernels, params
from ..errors import CaffeEnvError, ConfigError
from . import prototxt, reader, vocabulary
from . import shapes as inference
from . import validate as validation
from .prototxt import Message

TOLERANCE = 1e-5  # relative: float32 rounding of a sum of a few products


@dataclasses.dataclass
class DropInState:
    """A DropIn as WEIGHTS left it: `p_new` at that snapshot and `used`, the p its TEST mode uses."""
    name: str
    p_new: float
    used: float
    count: int
    config: dict


@dataclasses.dataclass
class Export:
    """A stock net equivalent to a trained DropIn net, with its weights and the proof.

    net: the exported prototxt tree. weights: {layer name: [float32 arrays]} for every remaining
    layer with parameters (the fixed layers' exact weights included). lines: one per layer of
    ours, what it became. proof: [(blob, max |export - original|, that / max |original|)], empty
    when not validated. form: "deploy" or "train_val". caffe_form: the net as Caffe builds it to
    save the weights (data layers as Input layers of their TEST shapes).
    """
    net: Message
    weights: dict
    lines: list
    proof: list
    form: str
    net_name: str
    solver: typing.Optional[Message]
    solver_name: typing.Optional[str]
    caffe_form: Message

    @property
    def failures(self):
        """The proof's rows above TOLERANCE (or not finite)."""
        return [row for row in self.proof if not row[2] <= TOLERANCE]

    def outputs(self, out_dir):
        """[(kind, path)] of what `write(out_dir)` writes."""
        found = [("net", os.path.join(out_dir, self.net_name + ".prototxt")),
                 ("weights", os.path.join(out_dir, self.net_name + ".caffemodel"))]
        if self.solver is not None:
            found.append(("solver", os.path.join(out_dir, self.solver_name + ".prototxt")))
        return found

    def write(self, out_dir, force=False):
        """Write the net, its .caffemodel (and the solver) into `out_dir`, all or none."""
        written = self.outputs(out_dir)
        contents = [prototxt.dumps(self.net), self._save]
        if self.solver is not None:
            solver = self.solver.copy()
            solver.set("net", os.path.abspath(written[0][1]))
            contents.append(prototxt.dumps(solver))
        files.write_into(out_dir, [(path, content) for (_, path), content in zip(written, contents)], force)
        return written

    def _save(self, path):
        """Build the export in Caffe, give it its weights, and let Caffe write the .caffemodel."""
        net = _load(self.caffe_form)
        _set_weights(net, self.weights, "the export")
        net.save(path)
        extra = [name for name in self.weights if name not in net.params]
        if extra:  # layers of a phase the built net lacks (TRAIN-only layers with weights)
            _append_layers(path, {name: self.weights[name] for name in extra})


# ---------------------------------------------------------------------------------------------
# Reading WEIGHTS and the DropIns' state

def read_weights(path):
    """{layer name: [float32 arrays]} of a binary .caffemodel (current or V1 layers)."""
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise ConfigError("cannot read WEIGHTS %s: %s" % (path, files.read_error_reason(error))) from None
    message = caffe_pb2.NetParameter()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError) as error:
        raise ConfigError("WEIGHTS %s is not a binary .caffemodel (%s); give the file Caffe's snapshot wrote"
                          % (path, error)) from None
    return {layer.name: [_array(blob) for blob in layer.blobs]
            for layer in list(message.layer) + list(message.layers) if len(layer.blobs)}


def _array(blob):
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width)
    values = blob.data if len(blob.data) else blob.double_data
    array = np.fromiter(values, np.float32, len(values))  # 5 times faster than np.array on protobuf's container
    if array.size != int(np.prod(shape)):
        raise ConfigError("a blob in WEIGHTS holds %d values for shape %s; the file is damaged" % (array.size, shape))
    return array.reshape(shape)


def dropin_state(layer, stored):
    """The DropInState of DropIn `layer` from `stored` weights (its counter gives p)."""
    name = str(layer.get("name", ""))
    param = layer.get("python_param") or Message()
    config, _ = params.layer_config("DropIn", str(param.get("param_str", "")))
    label = "DropIn '%s'" % name
    blobs = stored.get(name)
    if not blobs:
        raise ConfigError("%s: its counter blob is missing from WEIGHTS; give the .caffemodel that training this "
                          "net saved (a snapshot of it, not of another net)" % label)
    counter = blobs[0].ravel()
    count = kernels.decode_count(counter)
    if count is None:
        raise ConfigError("%s: its counter blob in WEIGHTS must be two whole numbers (low, high), got %s; give "
                          "the .caffemodel that training this net saved" % (label, counter.tolist()[:4]))
    p_new = kernels.p_new_at(config, count)
    return DropInState(name, p_new, kernels.test_p_new(config, p_new), count, config)


# ---------------------------------------------------------------------------------------------
# The forms: deploy, and the nets Caffe builds

def _layers(net):
    return net.get_all("layer")


def _with_layers(net, layers):
    """A copy of `net`'s own fields with `layers` in place of its layers."""
    kept = Message([[k, v.copy() if type(v) is Message else v] for k, v in net.fields if k != "layer"])
    for layer in layers:
        kept.add("layer", layer)
    return kept


def outputs_of(net):
    """Caffe's net outputs: the blobs no later layer reads."""
    available = []
    for layer in _layers(net):
        for bottom in layer.get_all("bottom"):
            if bottom in available:
                available.remove(bottom)
        available += [top for top in layer.get_all("top") if top not in available]
    return available


def input_layer(layer, shapes):
    tops = [str(top) for top in layer.get_all("top")]
    param = Message([["shape", Message([["dim", d] for d in shapes[top]])] for top in tops])
    return Message([["name", layer.get("name", "")], ["type", "Input"]] + [["top", t] for t in tops]
                   + [["input_param", param]])


def _strip_rules(layer):
    layer = layer.copy()
    layer.remove("include")
    layer.remove("exclude")
    return layer


def input_form(net, data_shapes, phase="TEST"):
    """`net` as Caffe builds it here: `phase`'s layers, data layers as Input layers of `data_shapes`."""
    kept = inference.phase_net(net, phase)
    layers = [input_layer(layer, data_shapes) if str(layer.get("type")) in vocabulary.DATA_TYPES
              else _strip_rules(layer) for layer in _layers(kept)]
    kept.remove("state")
    return _with_layers(kept, layers)


def deploy(net, data_shapes):
    """(deploy net, its outputs): TEST layers, data as Input, no labels, losses or Accuracy;
    SoftmaxWithLoss as Softmax (top "prob" unless taken)."""
    test = inference.phase_net(net, "TEST")
    taken = {str(b) for layer in _layers(test) for b in layer.get_all("top") + layer.get_all("bottom")}
    names = {str(layer.get("name")) for layer in _layers(net)}
    gone = set()
    layers, probs = [], []
    for layer in _layers(test):
        kind = str(layer.get("type"))
        if kind in vocabulary.DATA_TYPES:
            layers.append(input_layer(layer, data_shapes))
            gone.update(layer.get_all("top"))
        elif kind == "SoftmaxWithLoss":
            top = "prob" if "prob" not in taken else "%s_prob" % layer.get("name")
            taken.add(top)
            # Named as its top: OpenCV's dnn asks for outputs by layer name.
            name = top if top not in names else layer.get("name")
            softmax = Message([["name", name], ["type", "Softmax"], ["bottom", layer.get("bottom")],
                               ["top", top]])
            axis = (layer.get("softmax_param") or Message()).get("axis")
            if axis is not None:
                softmax.add("softmax_param", Message([["axis", axis]]))
            layers.append(softmax)
            gone.update(layer.get_all("top"))
            probs.append(top)
        elif vocabulary.is_loss(kind) or kind == "Accuracy":
            gone.update(layer.get_all("top"))
        else:
            layers.append(_strip_rules(layer))
    test.remove("state")
    outputs = [blob for blob in outputs_of(test) if blob not in gone] + probs
    return _with_layers(test, layers), outputs


def _transform_lines(net):
    """One line per TEST data layer whose transform_param the deploy net's Input drops: what the
    caller must now do to each input instead, in Caffe's order (crop, subtract the mean, scale)."""
    lines = []
    for layer in _layers(inference.phase_net(net, "TEST")):
        param, steps = layer.get("transform_param") or Message(), []
        if str(layer.get("type")) not in vocabulary.DATA_TYPES:
            continue
        if "crop_size" in param:
            steps.append("crop the centre %sx%s" % (param.get("crop_size"), param.get("crop_size")))
        if "mean_file" in param:
            steps.append("subtract the mean image in %s" % param.get("mean_file"))
        if param.get_all("mean_value"):
            steps.append("subtract mean_value %s (per channel)" % ", ".join(map(str, param.get_all("mean_value"))))
        if "scale" in param:
            steps.append("multiply by scale %s" % param.get("scale"))
        if steps:
            lines.append("%s '%s' is an Input now, without its transform_param; do to each input what it did: %s"
                         % (layer.get("type"), layer.get("name"), ", then ".join(steps)))
    return lines


def _load(net):
    """A caffe.Net of `net` in TEST (validate.load_net loads the native layers first when it has any)."""
    return validation.load_net(net, "TEST")


def _set_weights(caffe_net, weights, what):
    for name, blobs in caffe_net.params.items():
        given = weights.get(name)
        if given is None:
            raise ConfigError("WEIGHTS has no blobs for layer '%s' of %s (it has %d); give the .caffemodel trained "
                              "with this net" % (name, what, len(blobs)))
        wanted = [tuple(blob.data.shape) for blob in blobs]
        if len(given) != len(blobs) or any(a.size != b.data.size or (a.shape != b.data.shape and a.ndim != 4)
                                           for a, b in zip(given, blobs)):
            raise ConfigError("WEIGHTS does not match layer '%s': it holds blobs of shapes %s, the net needs %s; give "
                              "the .caffemodel trained with this net" % (name, [a.shape for a in given], wanted))
        for array, blob in zip(given, blobs):
            blob.data[...] = array.reshape(blob.data.shape)


def _append_layers(path, weights):
    from caffe.proto import caffe_pb2
    message = caffe_pb2.NetParameter()
    with open(path, "rb") as stream:
        message.ParseFromString(stream.read())
    for name, arrays in weights.items():
        layer = message.layer.add()
        layer.name = name
        for array in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(array.ravel().tolist())
    with open(path, "wb") as stream:
        stream.write(message.SerializeToString())


# ---------------------------------------------------------------------------------------------
# Replacing our layers, and dead-branch elimination

def _fixed_param():
    return Message([["lr_mult", 0], ["decay_mult", 0]])


def _resize_layers(layer, bottom_shape, top_shape, frozen):
    """[(layer, weights or None)] of stock layers that compute Resize `layer` from `bottom_shape`."""
    name, bottom, top = str(layer.get("name")), str(layer.get("bottom")), str(layer.get("top"))
    config, _ = params.layer_config("Resize", str((layer.get("python_param") or Message()).get("param_str", "")))
    channels_in, channels_out = bottom_shape[1], top_shape[1]
    steps = []
    if channels_in != channels_out:
        eye = np.eye(channels_out, channels_in, dtype=np.float32)
        if len(bottom_shape) == 4:
            steps.append(("channels", "Convolution", [["convolution_param", Message(
                [["num_output", channels_out], ["bias_term", False], ["kernel_size", 1]])]],
                eye.reshape(channels_out, channels_in, 1, 1)))
        else:
            steps.append(("channels", "InnerProduct", [["inner_product_param", Message(
                [["num_output", channels_out], ["bias_term", False]])]], eye))
    if len(bottom_shape) == 4 and bottom_shape[2:] != top_shape[2:]:
        (h, w), (h2, w2) = bottom_shape[2:], top_shape[2:]
        matrix = np.kron(kernels.interp_matrix(h, h2, config["interp"]),
                         kernels.interp_matrix(w, w2, config["interp"])).astype(np.float32)
        spatial = [("flatten", "Reshape", [["reshape_param", Message([["shape", Message(
                       [["dim", 0], ["dim", 0], ["dim", -1]])]])]], None),
                   ("resample", "InnerProduct", [["inner_product_param", Message(
                       [["num_output", h2 * w2], ["bias_term", False], ["axis", 2]])]], matrix),
                   ("unflatten", "Reshape", [["reshape_param", Message([["shape", Message(
                       [["dim", 0], ["dim", 0], ["dim", h2], ["dim", w2]])]])]], None)]
        # Truncate before resampling, pad after: the resampling then runs on the fewer channels.
        steps = steps + spatial if channels_out < channels_in else spatial + steps
    made, current = [], bottom
    for index, (suffix, kind, fields, weights) in enumerate(steps):
        last = index == len(steps) - 1
        made_name, made_top = (name, top) if last else ("%s_%s" % (name, suffix), "%s_%s" % (name, suffix))
        new = Message([["name", made_name], ["type", kind], ["bottom", current], ["top", made_top]])
        for key in ("include", "exclude"):  # --train-val keeps the phases
            for rule in layer.get_all(key):
                new.add(key, rule.copy())
        if weights is not None and frozen:
            new.add("param", _fixed_param())
        for key, value in fields:
            new.add(key, value)
        made.append((new, weights))
        current = made_top
    return made


def _describe_resize(name, bottom_shape, top_shape, made, interp):
    parts = []
    for layer, _ in made:
        kind = str(layer.get("type"))
        if kind == "Convolution":
            parts.append("Convolution 1x1 (channels %d -> %d)" % (bottom_shape[1], top_shape[1]))
        elif kind == "InnerProduct" and layer.get("inner_product_param").get("axis") == 2:
            parts.append("InnerProduct axis 2 (%s %dx%d -> %dx%d)" % ((interp,) + tuple(bottom_shape[2:])
                                                                      + tuple(top_shape[2:])))
        elif kind == "InnerProduct":
            parts.append("InnerProduct (channels %d -> %d)" % (bottom_shape[1], top_shape[1]))
        else:
            parts.append(kind)
    return "Resize '%s': %s" % (name, " + ".join(parts))


@dataclasses.dataclass
class _Replacing:
    """What replace_ours builds as it walks the net: the layers so far, the fixed weights, the lines
    that say what became of each layer of ours, the renames of removed tops, and the p tops."""
    states: dict
    shapes: dict
    layer_shapes: list
    frozen: bool
    later: list = None
    layers: list = dataclasses.field(default_factory=list)
    fixed: dict = dataclasses.field(default_factory=dict)
    lines: list = dataclasses.field(default_factory=list)
    renames: dict = dataclasses.field(default_factory=dict)
    p_tops: dict = dataclasses.field(default_factory=dict)


def _replace_dropin(done, layer, original, bottoms, tops):
    """A DropIn at p = 0 or 1 is removed (its consumers read prev or new; a Power copy where a later
    layer works in place on it); at 0 < p < 1 (TEST) it is an Eltwise SUM with coeff (1 - p, p)."""
    name = str(layer.get("name", ""))
    state = done.states[name]
    prev, new = bottoms[:2]
    top = tops[0]
    done.p_tops.update({t: name for t in tops[1:]})
    at = "p = %.6g (counter %d%s)" % (state.p_new, state.count,
                                       ", regularize" if state.config["mode"] == "regularize" else "")
    mode = state.config["test"]
    if state.used in (0.0, 1.0):
        source = new if state.used == 1.0 else prev
        why = "" if mode == "expectation" else ", test \"%s\"" % mode
        which = "new" if state.used == 1.0 else "prev"
        if _needs_copy(done.later, top, source):
            done.layers.append(Message([["name", name], ["type", "Power"], ["bottom", source], ["top", top]]))
            done.lines.append("DropIn '%s': %s%s: Power (an exact copy of '%s', %s: a later layer works in place on "
                              "its top while '%s' is read again)" % (name, at, why, source, which, source))
        else:
            done.renames[top] = source
            done.lines.append("DropIn '%s': %s%s: removed, its consumers read '%s' (%s)"
                              % (name, at, why, source, which))
        return
    coeff = (1.0 - state.used, state.used)
    blend = Message([["name", name], ["type", "Eltwise"], ["bottom", prev], ["bottom", new], ["top", top]]
                    + [[k, v.copy()] for k, v in layer.fields if k in ("include", "exclude")]
                    + [["eltwise_param", Message([["operation", prototxt.Enum("SUM")], ["coeff", coeff[0]],
                                                  ["coeff", coeff[1]]])]])
    done.layers.append(blend)
    done.lines.append("DropIn '%s': %s: Eltwise SUM with coeff (%.6g, %.6g)" % (name, at, coeff[0], coeff[1]))


def _replace_resize(done, layer, original, bottoms, tops):
    """A Resize that keeps its shape is removed; else stock layers with fixed weights (_resize_layers)."""
    name = str(layer.get("name", ""))
    bottom, top = bottoms[0], tops[0]
    bottom_shape = inference.require(done.shapes, done.layer_shapes, str(original.get("bottom")))
    top_shape = inference.require(done.shapes, done.layer_shapes, top)
    config, _ = params.layer_config("Resize", str((layer.get("python_param") or Message()).get("param_str", "")))
    made = _resize_layers(layer, bottom_shape, top_shape, done.frozen)
    if not made:
        done.renames[top] = bottom
        done.lines.append("Resize '%s': shape kept %s: removed, its consumers read '%s'"
                          % (name, tuple(bottom_shape[1:]), bottom))
        return
    for made_layer, weights in made:
        done.layers.append(made_layer)
        if weights is not None:
            done.fixed[str(made_layer.get("name"))] = [weights]
    done.lines.append(_describe_resize(name, bottom_shape, top_shape, made, config["interp"]))


REPLACE = {"DropIn": _replace_dropin, "Resize": _replace_resize}  # a handler for each kind of layer of ours


def _rewired(done, layer):
    """`layer` (a copy) reading the blobs its bottoms were renamed to; (its bottoms, its tops)."""
    for bottom in layer.get_all("bottom"):
        if str(bottom) in done.p_tops:
            raise ConfigError("layer '%s' reads '%s', the p top of DropIn '%s', which the export removes; let "
                              "nothing read a DropIn's p top" % (layer.get("name"), bottom, done.p_tops[str(bottom)]))
    bottoms = [done.renames.get(str(b), str(b)) for b in layer.get_all("bottom")]
    tops = [str(t) for t in layer.get_all("top")]
    in_place = [t for t in tops if t in {str(b) for b in layer.get_all("bottom")}]
    given = iter(bottoms)
    for field in layer.fields:
        if field[0] == "bottom":
            field[1] = next(given)
        elif field[0] == "top" and field[1] in in_place:
            field[1] = done.renames.get(field[1], field[1])
    for top in tops:  # a top written afresh ends an earlier rename of its name
        if top not in in_place:
            done.renames.pop(top, None)
    return bottoms, tops


def replace_ours(net, states, shapes, layer_shapes, frozen):
    """Replace every layer of ours in `net` (by its kind's handler in REPLACE); returns (net, fixed
    weights, lines, renames).

    `states`: {DropIn name: DropInState}; `shapes`/`layer_shapes`: inference's output for the
    Resize shapes; `frozen` gives the fixed layers lr_mult 0. `renames` maps a removed DropIn's
    top to the blob its consumers now read."""
    done = _Replacing(states, shapes, layer_shapes, frozen)
    originals = _layers(net)
    for position, original in enumerate(originals):
        layer = original.copy()
        bottoms, tops = _rewired(done, layer)
        kind = vocabulary.our_layer(layer)
        if kind is None:
            done.layers.append(layer)
        else:
            done.later = originals[position + 1:]
            REPLACE[kind](done, layer, original, bottoms, tops)
    return _with_layers(net, done.layers), done.fixed, done.lines, done.renames


def _needs_copy(later, top, source):
    """Reading `source` for `top` would be wrong: a later layer works in place on `top` (it would
    then overwrite `source`) and `source` itself is read later."""
    changed = any(top in layer.get_all("bottom") and top in layer.get_all("top") for layer in later)
    return changed and any(source in layer.get_all("bottom") for layer in later)


def prune(net, outputs_by_phase, trim_inputs):
    """`net` without the layers whose tops reach no output in any phase (dead-branch elimination);
    with `trim_inputs`, Input layers keep only the tops something needs."""
    live, needed_tops = set(), {}
    for phase, outputs in outputs_by_phase.items():
        keep = inference.keeper(net, phase, (), 0)
        needed = set(outputs)
        for layer in reversed([layer for layer in _layers(net) if keep(layer)]):
            tops = [str(t) for t in layer.get_all("top")]
            if any(t in needed for t in tops):
                live.add(id(layer))
                needed_tops.setdefault(id(layer), set()).update(t for t in tops if t in needed)
                needed.difference_update(tops)
                needed.update(str(b) for b in layer.get_all("bottom"))
    kept = []
    for layer in _layers(net):
        if id(layer) not in live:
            continue
        if trim_inputs and str(layer.get("type")) == "Input":
            tops = [str(t) for t in layer.get_all("top")]
            shapes = layer.get("input_param").get_all("shape")
            chosen = [(t, s) for t, s in zip(tops, shapes) if t in needed_tops[id(layer)]]
            layer = Message([["name", layer.get("name")], ["type", "Input"]] + [["top", t] for t, _ in chosen]
                            + [["input_param", Message([["shape", s] for _, s in chosen])]])
        kept.append(layer)
    return _with_layers(net, kept)


# ---------------------------------------------------------------------------------------------
# A finished widening (expand_net --widen) becomes one layer

# Followers that act on each unit alone and hold no parameters: one copy of them on the merged
# layer computes what the two copies computed on the two parts.
PER_UNIT_FOLLOWERS = {"ReLU", "TanH", "Sigmoid", "ELU", "AbsVal", "BNLL", "Power", "Dropout"}
_GEOMETRY_FREE = ("num_output", "weight_filler", "bias_filler")


def _part(layers, index, blob):
    """(the layer that makes `blob` for the layer at `index`, the layers after it working in place
    on `blob`), or (None, ...) when no layer before makes it."""
    followers = []
    for layer in reversed(layers[:index]):
        if blob in layer.get_all("top"):
            if vocabulary.in_place(layer, blob):
                followers.insert(0, layer)
            else:
                return layer, followers
    return None, followers


def _same_except(a, b, dropped):
    """Layers `a` and `b` alike but for their names, tops, parameter specs and `dropped` fields of
    their *_param messages."""
    def key(layer):
        copy = Message([[k, v.copy() if type(v) is Message else v] for k, v in layer.fields
                        if k not in ("name", "top", "param", "bottom")])
        for field, value in copy.fields:
            if field.endswith("_param") and type(value) is Message:
                for name in dropped:
                    value.remove(name)
        return prototxt.dumps(copy)
    return key(a) == key(b)


def _mergeable(layers, index, weights):
    """(head, extra, extra followers) when the Concat at `index` joins two copies of one conv or fc
    layer that read the same bottom, each with the same per-unit followers and read by nothing else:
    a finished widening. None otherwise."""
    concat = layers[index]
    param = concat.get("concat_param") or Message()
    bottoms = concat.get_all("bottom")
    if len(bottoms) != 2 or param.get("axis", 1) != 1 or param.get("concat_dim", 1) != 1:
        return None
    (head, followers), (extra, extra_followers) = (_part(layers, index, blob) for blob in bottoms)
    if head is None or extra is None or str(head.get("type")) not in ("Convolution", "InnerProduct"):
        return None
    if str(extra.get("type")) != str(head.get("type")) or head.get_all("bottom") != extra.get_all("bottom"):
        return None
    if not _same_except(head, extra, _GEOMETRY_FREE) or (head.get("inner_product_param") or Message()).get("transpose"):
        return None
    if len(followers) != len(extra_followers) or any(
            str(f.get("type")) not in PER_UNIT_FOLLOWERS or not _same_except(f, g, ()) for f, g in
            zip(followers, extra_followers)):
        return None
    names = (str(head.get("name")), str(extra.get("name")))
    if any(name not in weights for name in names):
        return None
    parts = {id(concat)} | {id(layer) for layer in followers + extra_followers}
    for blob in bottoms:
        if any(blob in layer.get_all("bottom") and id(layer) not in parts for layer in layers):
            return None
    return head, extra, extra_followers


def merge_widenings(net, weights):
    """`net` with every finished widening (a Concat of a conv or fc layer and its extra layer, see
    `_mergeable`) merged into the first layer, whose outputs become both parts' (weights and
    biases stacked in the Concat's order). Returns (net, weights, lines); `weights` is not changed."""
    layers, weights, lines = list(_layers(net)), dict(weights), []
    index = 0
    while index < len(layers):
        layer = layers[index]
        found = _mergeable(layers, index, weights) if str(layer.get("type")) == "Concat" else None
        if found is None:
            index += 1
            continue
        head, extra, extra_followers = found
        head_name, extra_name = str(head.get("name")), str(extra.get("name"))
        merged = [np.concatenate([a, b], axis=0) for a, b in zip(weights[head_name], weights[extra_name])]
        outputs = merged[0].shape[0]
        del weights[extra_name]
        weights[head_name] = merged
        head = head.copy()
        (head.get("convolution_param") or head.get("inner_product_param")).set("num_output", outputs)
        blob, joined = str(layer.get("bottom")), str(layer.get("top"))
        removed = {id(extra), id(layer)} | {id(f) for f in extra_followers}
        rebuilt = []
        for position, other in enumerate(layers):
            if id(other) in removed:
                continue
            if other is found[0]:
                other = head
            elif position > index:
                _rename_blob(other, joined, blob)
            rebuilt.append(other)
        index = rebuilt.index(head) + 1
        layers = rebuilt
        lines.append("widening '%s' + '%s' (Concat '%s'): merged into '%s' of %d outputs"
                     % (head_name, extra_name, layer.get("name"), head_name, outputs))
    return _with_layers(net, layers), weights, lines


def _rename_blob(layer, old, new):
    for field in layer.fields:
        if field[0] in ("bottom", "top") and field[1] == old:
            field[1] = new


# ---------------------------------------------------------------------------------------------
# The pipeline

def _data_shapes(tree, input_shapes, batch):
    """TEST shapes of every data top, from inference (with `input_shapes`), else from Caffe reading
    the sources when they are here; batch replaced by `batch` when given."""
    given = dict(input_shapes or {}, **validation.source_shapes(tree, "TEST", input_shapes))
    found, layers = inference.infer(tree, "TEST", given)
    shapes = {}
    for layer in layers:
        if layer.type in vocabulary.DATA_TYPES:
            for top, _ in layer.tops:
                shape = inference.require(found, layers, top)
                shapes[top] = shape if batch is None else (batch,) + tuple(shape[1:])
    return shapes


def _prove(original, exported, renames, weights, stored, seed=0):
    """Build both nets, feed the same seeded inputs, measure every output of the export."""
    original_net, exported_net = _load(original), _load(exported)
    _set_weights(original_net, stored, "the net")
    _set_weights(exported_net, weights, "the export")
    rng = np.random.default_rng(seed)
    for layer in _layers(original):
        if str(layer.get("type")) != "Input":
            continue
        for index, top in enumerate(layer.get_all("top")):
            blob = original_net.blobs[top].data
            values = rng.standard_normal(blob.shape).astype(np.float32) if index == 0 else np.zeros(blob.shape)
            blob[...] = values
            if top in exported_net.blobs:
                exported_net.blobs[top].data[...] = values
    original_net.forward()
    exported_net.forward()
    rows = []
    for blob in exported_net.outputs:
        name = next((old for old, new in renames.items() if new == blob and old in original_net.blobs), blob)
        got, want = exported_net.blobs[blob].data, original_net.blobs[name].data
        largest = float(np.abs(got - want).max()) if got.size else 0.0
        scale = float(np.abs(want).max()) if want.size else 0.0
        rows.append((blob, largest, largest / scale if scale > 0 else (0.0 if largest == 0 else float("inf"))))
    return rows


def export_net(net, weights, *, batch=1, input_shape=None, train_val=False, allow_blend=False, solver=None,
               validate=True, seed=0):
    """Export a trained DropIn net (a path, prototxt text or Message) with its WEIGHTS (a
    .caffemodel path) to its stock-Caffe equivalent; returns an `Export` (nothing is written).

    batch: the deploy Input layers' batch; input_shape: {BLOB: (C, H, W) or (N, C, H, W)} for
    data layers whose shapes live in their source; train_val: keep data, losses and both phases;
    allow_blend: let train_val export a DropIn at 0 < p < 1; solver: with train_val, the solver
    to point at the export; validate=False skips the proof (`--no-validate`).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError("--batch must be an integer >= 1, got %r" % (batch,))
    need_caffe("exporting", "export_net")
    if solver is not None and not train_val:
        raise ConfigError("--solver goes with --train-val (a deploy net is not trained); add --train-val or drop "
                          "--solver")
    name, tree, ours = _read_ours(net)
    solver_tree = reader.read_prototxt(solver, "solver") if solver is not None else None
    stored = read_weights(weights)
    states = _states(ours, stored, train_val and not allow_blend)
    data_shapes = _data_shapes(tree, input_shape, batch if not train_val else None)
    source, outputs, found, layer_shapes = _form(tree, data_shapes, input_shape, train_val)
    exported, exported_weights, lines, renames = _stock(source, outputs, states, found, layer_shapes, stored, ours,
                                                        train_val)
    lines += [] if train_val else _transform_lines(tree)
    original_form = input_form(source, data_shapes) if train_val else source
    exported_form = input_form(exported, data_shapes) if train_val else exported
    if validate:
        proof = _prove(original_form, exported_form, renames, exported_weights, stored, seed)
    else:  # still refuse WEIGHTS that do not fit the net, before anything is written
        proof = []
        _set_weights(_load(original_form), stored, "the net")
    solver_out, solver_name = _stock_solver(solver, solver_tree) if solver_tree is not None else (None, None)
    suffix = "_stock" if train_val else "_deploy"
    return Export(exported, exported_weights, lines, proof, "train_val" if train_val else "deploy",
                  name + suffix, solver_out, solver_name, exported_form)


def need_caffe(what, tool):
    """CaffeEnvError in one line when Caffe is not importable: `what` (exporting, ...) needs it."""
    try:
        import caffe  # noqa: F401  (reading a .caffemodel, the proof and writing one all need it)
    except ImportError as error:
        raise CaffeEnvError("%s needs Caffe, which %s cannot import (%s); run it with the embedded Caffe: "
                            "%s" % (what, sys.executable, error, env.command([tool, "..."]))) from None


def _read_ours(net):
    """(name stem, the net in the current format, its layers of ours); a net without any is refused."""
    name, tree = reader.name_of(net, "net"), reader.read_net(net)
    ours = [layer for layer in _layers(tree) if vocabulary.our_layer(layer)]
    if not ours:
        raise ConfigError("nothing to export in %s: it has no DropIn or Resize layer (Python or native), so it is "
                          "already a stock Caffe net" % (net if name != "net" else "the net"))
    return name, tree, ours


def _states(ours, stored, refuse_blends):
    """{DropIn name: DropInState} from the stored counters; with `refuse_blends` (train_val without
    --allow-blend) a DropIn at 0 < p < 1 is refused."""
    states = {str(layer.get("name")): dropin_state(layer, stored) for layer in ours
              if vocabulary.our_layer(layer) == "DropIn"}
    blending = sorted(s.name for s in states.values() if 0.0 < s.used < 1.0)
    if refuse_blends and blending:
        raise ConfigError("--train-val: DropIn %s is at 0 < p < 1 (p = %.6g), where training selects units at random; "
                          "its Eltwise blend would train by other rules. Export a snapshot past the schedule, or pass "
                          "--allow-blend" % (blending[0], states[blending[0]].used))
    return states


def _form(tree, data_shapes, input_shape, train_val):
    """(the net to replace our layers in, {phase: its output blobs}, shapes, layer shapes): the
    train_val net itself, both phases; or its TEST phase as a deploy net with Input layers."""
    if not train_val:
        source, test_outputs = deploy(tree, data_shapes)
        found, layer_shapes = inference.infer(source, "TEST")
        return source, {"TEST": test_outputs}, found, layer_shapes
    outputs = {phase: outputs_of(inference.phase_net(tree, phase)) for phase in vocabulary.PHASES}
    found, layer_shapes = {}, []
    for phase in vocabulary.PHASES:
        phase_found, phase_layers = inference.infer(tree, phase, _hints(data_shapes, input_shape))
        found.update({k: v for k, v in phase_found.items() if v is not None})
        layer_shapes += phase_layers
    return tree, outputs, found, layer_shapes


def _stock(source, outputs, states, found, layer_shapes, stored, ours, train_val):
    """(the stock net, its weights, the lines saying what became of our layers, the renames of
    removed tops): ours replaced, the unused pruned, the stored weights carried over (but DropIn
    counters), widenings merged."""
    replaced, fixed, lines, renames = replace_ours(source, states, found, layer_shapes, frozen=train_val)
    outputs = {phase: [renames.get(blob, blob) for blob in blobs if blob not in p_tops(source)]
               for phase, blobs in outputs.items()}
    exported = prune(replaced, outputs, trim_inputs=not train_val)
    weights, replaced_names = {}, {str(layer.get("name")) for layer in ours}
    for layer in _layers(exported):
        layer_name = str(layer.get("name"))
        if layer_name in fixed:
            weights[layer_name] = fixed[layer_name]
        elif layer_name in stored and layer_name not in replaced_names:  # not a DropIn's counter
            weights[layer_name] = stored[layer_name]
    exported, weights, merged = merge_widenings(exported, weights)
    return exported, weights, lines + merged, renames


def _stock_solver(solver, solver_tree):
    """The solver pointed at the stock train_val net (its net fields dropped, snapshots apart) and its name."""
    solver_out = solver_tree.copy()
    for key in ("train_net", "test_net", "net_param", "train_net_param", "test_net_param"):
        solver_out.remove(key)
    if "snapshot_prefix" in solver_out:
        solver_out.set("snapshot_prefix", str(solver_out.get("snapshot_prefix")) + "_stock")
    return solver_out, reader.name_of(solver, "solver") + "_stock"


def p_tops(net):
    return {str(t) for layer in _layers(net) if vocabulary.our_layer(layer) == "DropIn"
            for t in layer.get_all("top")[1:]}


def _hints(data_shapes, input_shapes):
    """input_shapes for inferring either phase: the given ones, and the images' C, H, W as found in
    TEST (each phase's data layer keeps its own batch)."""
    hints = dict(input_shapes or {})
    for top, shape in data_shapes.items():
        if len(shape) == 4 and top not in hints:
            hints[top] = tuple(shape[1:])
    return hints
