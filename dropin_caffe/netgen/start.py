"""A trained model patched deeper (`expand_net --weights TRAINED.caffemodel`): its start and the proof.

The original layers keep their names, so the expanded net's initial weights (NET_dropin_init.caffemodel)
are the trained layers' blobs unchanged, the replicas drawn once by Caffe from their fillers (Caffe
builds the expanded net and its fresh params are read back) or their identity start
(`--replica-init identity`), and the DropIn counters at 0. A widened layer (--widen) keeps its trained
blobs; its extra layer is drawn like a replica, the extra's copied followers start neutral (BatchNorm
mean 0, variance 1, factor 1; Scale 1 and 0; PReLU the original's slopes), and every weighted consumer
of the widened output keeps its trained weights for the old inputs with ZERO for the new ones (per-channel
layers between grow neutral), so the new units enter multiplied by zero. Where zeros cannot keep the
function (a grouped consumer, a layer between that mixes or moves channels) `rewrite.zero_paddable`
refuses the widening.

The proof: Caffe builds the original net with the trained weights and the expanded net with the
init, in TEST at batch 1, data layers as Input layers fed the same seeded gaussian input (labels 0),
and compares every output of the original (the blobs no layer reads, and the scores its losses
read: a loss at label 0 is a blunt witness). What is promised equal to the trained net:

    p = 0 ("test": "prev", in a copy used only here): always, but where --regularize put an upstream
          `prev` (a widening's prev is its layer's output zero-padded, read by zero weights);
    p = 1 ("test": "new"): with no replicas, or identity replicas reading a blob their copied ReLUs
          pass unchanged; a widening alone is promised (its new units meet zero weights);
    without DropIn: as p = 1.

Where equality is promised a difference above TOLERANCE of the output's scale is an error and
nothing is written; elsewhere (fresh replicas at p = 1 or without DropIn, --regularize at p = 0, an
identity after a layer without ReLU) a note prints it.
"""
import collections
import json

import numpy as np

from ..errors import ConfigError, clip
from . import export, rewrite, vocabulary
from . import shapes as inference
from . import validate as validation
from .prototxt import Message

TOLERANCE = 1e-5  # of the output's scale: float32 rounding of the same sums in another order
REGULARIZED = "--regularize replaces a Dropout by a DropIn whose prev is another blob"


def read_trained(path):
    """{layer: [arrays]} of the trained .caffemodel `path`; CaffeEnvError in one line without Caffe."""
    export.need_caffe("--weights (reading a .caffemodel)", "expand_net")
    return export.read_weights(path)


Widening = collections.namedtuple("Widening", "name outputs width consumers channelwise")
Widening.__doc__ = """A layer widened from `outputs` to `width` channels, its weighted consumers and the
per-channel learned layers between (`rewrite.zero_paddable`), for --widen with --weights."""


def widenings(original, widen):
    """[Widening] of the plan's `widen` [(layer, C2)] in the (upgraded) `original` net; ConfigError
    naming the layer where zero input weights cannot keep the trained function."""
    found = []
    for name, width in widen:
        layer = rewrite.find_layer(original, name, "--widen")
        outputs = int((layer.get("convolution_param") or layer.get("inner_product_param")).get("num_output"))
        found.append(Widening(name, outputs, width, *rewrite.zero_paddable(original, name, width)))
    return found


def zero_padded(array, axis, old, new, fill=0.0):
    """`array` with its `axis` of `old` channels (each a block of consecutive entries: 1, or H*W where an
    InnerProduct reads a flattened C x H x W blob, channel-major) grown to `new`: the old entries first,
    unchanged, then the new channels' blocks, `fill`."""
    block = array.shape[axis] // old
    head, tail = array.shape[:axis], array.shape[axis + 1:]
    grown = np.full(head + (new, block) + tail, fill, dtype=array.dtype)
    grown[(slice(None),) * axis + (slice(0, old),)] = array.reshape(head + (old, block) + tail)
    return grown.reshape(head + (new * block,) + tail)


def _input_axis(layer):
    """The axis of `layer`'s weights along its inputs: 0 for Deconvolution (in x out x ...) and a
    transposed InnerProduct, else 1 (out x in x ...)."""
    transpose = str((layer.get("inner_product_param") or Message([])).get("transpose", "false")).lower() == "true"
    return 0 if str(layer.get("type")) == "Deconvolution" or transpose else 1


def _padded_layers(path, trained, widened):
    """{layer: [arrays]}: the trained blobs of each widening's consumers with zero input weights for the
    new channels (biases unchanged), and of the per-channel layers between, grown neutral (BatchNorm mean
    0 and variance 1, Scale weight 1, Bias 0, PReLU slopes repeated)."""
    padded = {}
    for widening in widened:
        old, new = widening.outputs, widening.width
        for layer in widening.consumers:
            name = str(layer.get("name"))
            if name not in trained:
                continue
            weight = trained[name][0]
            if str(layer.get("type")) == "InnerProduct":
                weight = weight.reshape(weight.shape[-2:])  # an old caffemodel's (1, 1, out, in)
            axis = _input_axis(layer)
            if weight.shape[axis] % old:
                raise ConfigError("--weights %s does not fit layer '%s': it reads %d inputs, not a multiple of "
                                  "%s's %d channels; give the .caffemodel trained with this net"
                                  % (path, name, weight.shape[axis], widening.name, old))
            padded[name] = [zero_padded(weight, axis, old, new)] + list(trained[name][1:])
        for layer in widening.channelwise:
            name, kind = str(layer.get("name")), str(layer.get("type"))
            if name not in trained:
                continue
            arrays = [a.reshape(-1) if a.size == old else a for a in trained[name]]
            factor = float(arrays[2].reshape(-1)[0]) if kind == "BatchNorm" and len(arrays) > 2 else 1.0
            fills = _neutral_fills(layer, factor)
            padded[name] = [(np.resize(a, new) if fill is None else zero_padded(a, 0, old, new, fill))
                            if a.ndim == 1 and a.size == old else a for a, fill in zip(arrays, fills + [0.0] * 3)]
    return padded


def _neutral_fills(layer, factor=1.0):
    """Per blob, the value a per-channel `layer`'s new channels start from so that they change nothing:
    BatchNorm mean 0 and variance 1 (Caffe stores both times its scale `factor`), Scale weight 1 and
    bias 0 (a Scale of two bottoms holds only the bias), Bias 0; None for PReLU, whose new slopes
    repeat the trained ones."""
    kind = str(layer.get("type"))
    if kind == "BatchNorm":
        return [0.0, factor, factor]
    if kind == "Scale":
        return [1.0, 0.0] if len(layer.get_all("bottom")) == 1 else [0.0]
    return [None] if kind == "PReLU" else [0.0, 0.0]


def _neutral_followers(weights, trained, expanded, widened):
    """The extra layer's copied followers in `weights` made neutral: BatchNorm mean 0, variance 1, factor 1;
    Scale weight 1, bias 0; Bias 0; PReLU slopes the original's (repeated to the extra channels)."""
    for widening in widened:
        members, chain = rewrite.widened_parts(expanded, widening.name)
        for member, copy in zip(members[1:], chain[1:]):
            name, kind = str(copy.get("name")), str(copy.get("type"))
            if name not in weights:
                continue
            arrays = weights[name]
            if kind in ("BatchNorm", "Scale", "Bias"):
                weights[name] = [np.full_like(a, fill) for a, fill in zip(arrays, _neutral_fills(copy))]
            elif kind == "PReLU" and str(member.get("name")) in trained:
                slopes = trained[str(member.get("name"))][0]
                weights[name] = [np.resize(slopes, arrays[0].shape).astype(arrays[0].dtype)]


def initial_weights(path, trained, original, expanded, shapes, identity=None, widened=()):
    """(the init {layer: (type, [arrays])}, notes) of `expanded` started from `trained`, read from `path`.

    shapes: {phase: {blob: shape}} of the expanded net; identity: the replicas' identity start
    ({layer: (type, [arrays])}) or None for their fillers; widened: [Widening] (`widenings`), whose
    consumers start from their trained blobs zero-padded and whose extra followers start neutral.
    Raises ConfigError when the caffemodel shares no layer with the net or a common layer's blobs
    have other shapes. Blobs of an old caffemodel (num, channels, height, width) are reshaped to the
    net's, in `trained` too (the consumers of a widening keep their trained blobs there).
    """
    types = {str(layer.get("name")): str(layer.get("type")) for layer in expanded.get_all("layer")}
    own = [str(layer.get("name")) for layer in original.get_all("layer")]
    common = [name for name in types if name in trained]
    if not common:
        raise ConfigError("--weights %s has no layer of %s: is it another net's? it holds %s; give the .caffemodel "
                          "trained with this net" % (path, clip(str(original.get("name", "the net")), 40),
                                                     clip(", ".join(trained) or "no blobs", 120)))
    notes = []
    fresh = _fresh_params(expanded, shapes, notes)
    padded = _padded_layers(path, trained, widened)
    given = dict(trained, **padded)
    for name in common:
        wanted = fresh.get(name, given[name])
        if len(wanted) != len(given[name]) or not all(map(_fits, given[name], wanted)):
            raise ConfigError("--weights %s does not fit layer '%s': it holds blobs of shapes %s, the net's are %s; "
                              "give the .caffemodel trained with this net" % (path, name, _shapes(trained[name]),
                                                                              _shapes(fresh[name])))
        given[name] = [a.reshape(b.shape) for a, b in zip(given[name], wanted)]
        if name not in padded:  # the original net of the proof reads the padded layers' trained blobs
            trained[name] = given[name]
    learned = fresh or {name: None for name in own if types.get(name) in vocabulary.LEARNED_TYPES}
    missing = [name for name in own if name in learned and name not in trained]
    if missing:
        notes.append("--weights %s has no blobs for %s: they start from their fillers" % (path, ", ".join(missing)))
    weights = dict(fresh, **{name: given[name] for name in common})
    weights.update({name: arrays for name, (_, arrays) in (identity or {}).items()})
    _neutral_followers(weights, trained, expanded, widened)
    return {name: (types[name], arrays) for name, arrays in weights.items()}, notes


def _fits(given, wanted):
    """A trained blob fits the net's: the same shape, or as old caffemodels store it (num, channels,
    height, width), the shape with leading 1s, which Caffe's Blob::ShapeEquals accepts too."""
    legacy = (1,) * (4 - wanted.ndim) + wanted.shape if wanted.ndim <= 4 else None
    return given.shape == wanted.shape or given.shape == legacy


def _shapes(arrays):
    return "[%s]" % ", ".join("x".join(map(str, a.shape)) for a in arrays)


def _fresh_params(net, shapes, notes):
    """{layer: [arrays]} of `net` as Caffe fills it (TEST, batch 1); {} with a note when Caffe cannot build it."""
    try:
        built = validation.build(net, "TEST", shapes)
    except ConfigError as error:
        notes.append("--weights: Caffe cannot build the expanded net here (%s): the replicas start from their fillers "
                     "when caffe train builds it, and the blob shapes were not checked" % error)
        return {}
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in built.params.items()}


# ---------------------------------------------------------------------------------------------
# The proof

def comparisons(plan, expanded, replicas):
    """[(label, DropIn "test" mode or None, why equality is not promised or None)] the proof makes (the
    promises of the module docstring; a widening promises equality at p = 0 and p = 1 by itself)."""
    drops = [layer for layer in expanded.get_all("layer") if vocabulary.our_layer(layer) == "DropIn"]
    inexact = [name for name in replicas if not passes_unchanged(expanded, name)] if plan.identity else replicas
    at_one = None  # a regularizing DropIn at p = 1 is its Dropout's input, which a Dropout passes in TEST
    if not plan.identity and replicas:
        at_one = "fresh replicas drawn from their fillers"
    elif inexact:
        at_one = "identity replica '%s' reads a blob its followers change (no ReLU before it, or not only ReLUs)" \
                 % inexact[0]
    if not drops:
        return [("without DropIn", None, at_one)]
    at_zero = REGULARIZED if plan.regularize else None
    return [("at p = 0 (every DropIn outputs prev)", "prev", at_zero),
            ("at p = 1 (every DropIn outputs new)", "new", at_one)]


def passes_unchanged(net, name):
    """Whether identity replica `name` of `net` outputs its input: no followers, or only ReLUs
    (without negative_slope) after a blob made by such a ReLU (or by a DropIn of two such blobs)."""
    layers = net.get_all("layer")
    layer = rewrite.find_layer(net, name)
    followers = rewrite.unit(net, layer)[1:]
    if not followers:
        return True
    return all(map(_plain_relu, followers)) and _nonnegative(layers, layers.index(layer), str(layer.get("bottom")))


def _plain_relu(layer):
    slope = float((layer.get("relu_param") or Message()).get("negative_slope", 0))
    return str(layer.get("type")) == "ReLU" and slope == 0


def _nonnegative(layers, before, blob):
    index = next((i for i in range(before - 1, -1, -1) if blob in layers[i].get_all("top")), None)
    if index is None:
        return False
    producer = layers[index]
    if vocabulary.our_layer(producer) == "DropIn":
        return all(_nonnegative(layers, index, str(b)) for b in producer.get_all("bottom"))
    return _plain_relu(producer)


def prove(original, expanded, trained, weights, shapes, checks, seed=0):
    """Notes, one per comparison of `checks` (`comparisons`): the largest difference between the
    outputs of the original net with the `trained` blobs ({layer: [arrays]}; the layers it lacks
    from the init) and the expanded net with the init `weights` ({layer: (type, [arrays])});
    ConfigError where equality is promised and the difference is above TOLERANCE."""
    data = _data_shapes(original, shapes["TEST"])
    unknown = [top for top, shape in data.items() if shape is None]  # in net order
    if unknown:
        return ["--weights: the start was not proven in Caffe: the shape of '%s' is unknown (give --input-shape %s="
                "C,H,W to prove it)" % (unknown[0], unknown[0])]
    init = {name: arrays for name, (_, arrays) in weights.items()}
    reference, names = _outputs(original, dict(init, **trained), data, seed, None)
    if not names:
        return ["--weights: the start was not proven in Caffe: the net has no output to compare"]
    notes = []
    for label, test, why in checks:
        got, _ = _outputs(expanded, init, data, seed, test, names)
        blob, difference = max(((name, _relative(got[i], reference[i])) for i, name in enumerate(names)),
                               key=lambda item: item[1])
        if why is None and not difference <= TOLERANCE:
            raise ConfigError("--weights: the expanded net %s must output what the trained net does, but '%s' differs "
                              "by %.3g of its scale (above %g); please report this net" % (label, blob, difference,
                                                                                            TOLERANCE))
        notes.append("--weights: the start %s %s: largest difference %.3g of the output's scale ('%s')"
                     % (label, "is the trained net" if why is None else "is not promised to be the trained net (%s)"
                        % why, difference, blob))
    return notes


def _relative(got, want):
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12)) if want.size else 0.0


def _data_shapes(net, shapes):
    """{top: its TEST shape at batch 1, or None} of the layers of `net` without bottoms."""
    found = {}
    for layer in inference.phase_net(net, "TEST").get_all("layer"):
        if vocabulary.is_data(layer):
            for top in layer.get_all("top"):
                shape = shapes.get(str(top))
                found[str(top)] = None if shape is None else (1,) + tuple(shape[1:])
    return found


def _input_form(net, data, test):
    """`net`'s TEST layers, data layers as Input of `data`, every DropIn's "test" set to `test`."""
    kept = inference.phase_net(net, "TEST")
    kept.remove("state")
    for field in kept.fields:
        if field[0] != "layer":
            continue
        layer = field[1]
        if vocabulary.is_data(layer):
            field[1] = export.input_layer(layer, data)
        elif test is not None and vocabulary.our_layer(layer) == "DropIn":
            param = layer.get("python_param")
            config = json.loads(str(param.get("param_str", "{}")) or "{}")
            param.set("param_str", json.dumps(dict(config, test=test)))
    return validation.for_caffe(kept)


def _outputs(net, weights, data, seed, test, names=None):
    """([output arrays], their blob names) of `net` in TEST with `weights` ({layer: [arrays]}), fed
    seeded gaussian data (first top of each data layer; the others 0). The outputs: the blobs no
    layer reads, and the scores losses and Accuracy read and the blobs Silence reads (`names`: the
    original's, matched by name among this net's, the rest paired in order)."""
    form = _input_form(net, data, test)
    built = validation.load_net(form, "TEST")
    for name, blobs in built.params.items():
        for blob, array in zip(blobs, weights.get(name, ())):
            blob.data[...] = array
    rng = np.random.default_rng(seed)
    for layer in form.get_all("layer"):
        if str(layer.get("type")) == "Input":
            for index, top in enumerate(layer.get_all("top")):
                blob = built.blobs[str(top)].data
                blob[...] = rng.standard_normal(blob.shape) if index == 0 else 0
    built.forward()
    read = [str(b) for layer in form.get_all("layer") for b in _compared_bottoms(layer)]
    found = [blob for blob in dict.fromkeys(export.outputs_of(form) + read) if blob not in export.p_tops(form)]
    if names is not None:
        left = [blob for blob in found if blob not in names]
        found = [name if name in found or not left else left.pop(0) for name in names]
    return [built.blobs[blob].data.copy() for blob in found], found


def _compared_bottoms(layer):
    """The bottoms of `layer` the proof compares besides the outputs: a loss's or Accuracy's first
    (the scores: a loss at label 0 is a blunt witness), all of a Silence's."""
    kind = str(layer.get("type"))
    if kind == "Silence":
        return layer.get_all("bottom")
    return layer.get_all("bottom")[:1] if vocabulary.is_loss(kind) or kind == "Accuracy" else []
