"""The net rewrites behind expand_net, on schema-free prototxt trees (`prototxt.Message`).

- `replicate`: insert K copies of a layer (with its followers: the in-place layers after it, and
  the BatchNorm, Scale, ReLU, LRN, ... that alone read its output) right after that chain, each
  made shape-preserving (input channels = the layer's output channels; stride 1 and "same"
  padding where the layer changes the spatial size) and joined by a gradual DropIn: prev = the
  chain's end, new = the end of the replica's own copy of the chain. Whatever consumed the
  chain's output consumes the last DropIn's. Without DropIn the replicas are simply chained: the
  plain expanded baseline every experiment needs. Replicas of a layer without a weight filler get
  msra (conv) or xavier (fc), and copied BatchNorm layers compute their statistics in TRAIN.
- `regularize`: replace a Dropout layer by a regularizing DropIn whose prev is the nearest blob
  upstream of the Dropout's input through which every path from the net's inputs passes (the
  input of the weight layer before it; after a Concat, the blob its branches split from), or a
  blob the user names; flattened and resized (Resize layer) when the shapes differ.
- `widen`: grow a Convolution or InnerProduct from C to C2 outputs. The layer keeps its C units;
  an extra layer (same bottom and geometry, fresh weights) computes the other C2 - C; new is the
  Concat of the two, prev the layer's output zero-padded to C2 channels (Resize), and a gradual
  DropIn joins them: the first C units are the layer's at every p, the extra ones grow in from
  zero. The paper names starting thin and adding units during training as future work; this
  construction is our choice. The consumers are built for C2 inputs (Caffe re-derives their weights;
  `zero_paddable` says whether expand_net --weights can start them from trained ones, zero-padded).
Each DropIn's param_str config is given complete (`plan.Plan.joins`: its length, start and seed);
the rewrites only place it. A rewrite reads the shapes it needs from `shapes.infer` of the net as
it is (the caller infers again after each rewrite), and returns the layers it added (`Rewritten`).

Original layers keep their names, so `caffe train --weights=original.caffemodel` starts them from
a trained model while replicas start fresh from the same fillers. New DropIn layers carry
`param { lr_mult: 0 decay_mult: 0 }` so the solver never touches their iteration counter.
"""
import collections
import difflib
import json
import math

from ..errors import ConfigError, clip
from . import shapes as inference
from .prototxt import Message
from .vocabulary import (
    ACTIVATION_TYPES,
    CONV_TYPES,
    DROPIN_MODULE,
    FOLLOWER_TYPES,
    LEARNED_TYPES,
    NATIVE_TYPES,
    WEIGHT_TYPES,
    is_data,
    is_loss,
    our_layer,
)
from .vocabulary import in_place as _in_place


def layers(net):
    return net.get_all("layer")


def _names(net):
    return {layer.get("name") for layer in layers(net)}


def _blobs(net):
    return {blob for layer in layers(net) for blob in layer.get_all("top")}


def find_layer(net, name, option="--replicate"):
    """The one layer called `name`; a clear error with near matches otherwise."""
    found = [layer for layer in layers(net) if layer.get("name") == name]
    if not found:
        near = difflib.get_close_matches(name, sorted(_names(net)), n=4)
        if near:
            hint = "; did you mean %s?" % ", ".join(near)
        elif layers(net):
            hint = "; its layers: %s" % clip(", ".join(str(layer.get("name")) for layer in layers(net)), 200)
        else:
            hint = "; it has no layers (a solver? give the net, and the solver with --solver)"
        raise ConfigError("%s: no layer named %r in the net%s" % (option, name, hint))
    if len(found) > 1:
        raise ConfigError("%s: %d layers are named %r (one per phase?); rewrite a layer whose name is unique"
                          % (option, len(found), name))
    return found[0]


def unit(net, layer):
    """The layer and its followers: the chain right after it of in-place layers, and of layers of
    FOLLOWER_TYPES (BatchNorm, Scale, ReLU, LRN, ...) that are not in place but are the only reader
    of the chain's blob. The unit's output is the top of its last member."""
    all_layers = layers(net)
    start = all_layers.index(layer)
    tops = layer.get_all("top")
    members = [layer]
    if len(tops) != 1:
        return members
    blob = tops[0]
    for position in range(start + 1, len(all_layers)):
        follower = all_layers[position]
        if _in_place(follower, blob):
            members.append(follower)
        elif str(follower.get("type")) in FOLLOWER_TYPES and follower.get_all("bottom") == [blob] \
                and len(follower.get_all("top")) == 1 and _readers(all_layers[position:], blob) == 1:
            members.append(follower)
            blob = follower.get("top")
        else:
            break
    return members


def _readers(later_layers, blob):
    """How many of `later_layers` read `blob` before a layer that is not in place rewrites it."""
    count = 0
    for layer in later_layers:
        if blob in layer.get_all("bottom"):
            count += 1
        if blob in layer.get_all("top") and not _in_place(layer, blob):
            break
    return count


def _fresh(taken, name):
    if name in taken:
        raise ConfigError("the new name %r is already used by a layer or blob of the net; rename that "
                          "layer or pass the replica names explicitly" % name)
    taken.add(name)
    return name


def _python_layer(name, kind, bottoms, tops, config, frozen):
    layer = Message([["name", name], ["type", "Python"]])
    for bottom in bottoms:
        layer.add("bottom", bottom)
    for top in tops:
        layer.add("top", top)
    if len(tops) > 1:  # the p top is for the log only: no loss
        for _ in tops:
            layer.add("loss_weight", 0.0)
    if frozen:
        layer.add("param", Message([["lr_mult", 0.0], ["decay_mult", 0.0]]))
    param_str = json.dumps(dict({"name": name}, **config))
    layer.add("python_param", Message([["module", DROPIN_MODULE], ["layer", kind], ["param_str", param_str]]))
    return layer


def dropin_layer(name, prev, new, top, config, p_top=False):
    """A DropIn layer joining blobs `prev` and `new` into `top` (and `top`_p with p_top)."""
    tops = [top, top + "_p"] if p_top else [top]
    return _python_layer(name, "DropIn", [prev, new], tops, config, frozen=True)


def resize_layer(name, bottom, top, shape):
    """A Resize layer reshaping `bottom` to the channels (and H, W) of `shape`."""
    config = dict(zip(("channels", "height", "width"), shape[1:]))
    return _python_layer(name, "Resize", [bottom], [top], config, frozen=False)


def _replace(message, name, old, new):
    """Fields `name` holding `old` hold `new`, in place (field order is kept)."""
    for field in message.fields:
        if field[0] == name and field[1] == old:
            field[1] = new


def per_axis(param, key, default, prefix=None):
    """A conv parameter as [h, w], from `key` (one or two values) or PREFIX_h / PREFIX_w."""
    values = param.get_all(key)
    if values:
        return values * 2 if len(values) == 1 else values
    prefix = prefix or key
    return [param.get(prefix + "_h", default), param.get(prefix + "_w", default)]


def _shape_preserving_conv(layer, kernel):
    """Make a copied conv layer keep its input's spatial size: stride 1, "same" padding."""
    param = layer.get("convolution_param")
    if kernel is not None:
        for key in ("kernel_size", "kernel_h", "kernel_w"):
            param.remove(key)
        param.add("kernel_size", kernel)
    sizes = per_axis(param, "kernel_size", None, prefix="kernel")
    dilations = param.get_all("dilation") or [1]
    dilations = dilations * 2 if len(dilations) == 1 else dilations
    if None in sizes or any(size % 2 == 0 for size in sizes):
        raise ConfigError("layer %r: a replica of a convolution with an even or missing kernel size (%s) "
                          "cannot keep the blob's shape; give an odd replica kernel (--replica-kernel 3)"
                          % (layer.get("name"), sizes))
    pads = [d * (k - 1) // 2 for k, d in zip(sizes, dilations)]
    old_pads = per_axis(param, "pad", 0)
    old_strides = per_axis(param, "stride", 1)
    for key in ("pad", "pad_h", "pad_w", "stride", "stride_h", "stride_w"):
        param.remove(key)
    if pads[0] == pads[1]:
        param.add("pad", pads[0])
    else:
        param.add("pad_h", pads[0])
        param.add("pad_w", pads[1])
    return old_pads != pads or old_strides != [1, 1]


def _replica(original, name, bottom, kernel, filler):
    """A fresh copy of `original` named `name` reading `bottom`: (replica, whether its conv geometry
    changed, the weight filler it was given or None)."""
    replica = _fresh_copy(original)
    replica.set("name", name)
    replica.set("bottom", bottom)
    replica.set("top", name)
    weights = replica.get("convolution_param") or replica.get("inner_product_param")
    given = None
    if weights is not None and (filler is not None or _dead(weights.get("weight_filler"))):
        given = filler or Message([["type", "msra" if original.get("type") in CONV_TYPES else "xavier"]])
        weights.set("weight_filler", given.copy())
    changed = original.get("type") in CONV_TYPES and _shape_preserving_conv(replica, kernel)
    return replica, changed, given


def _fresh_copy(layer):
    """A copy of `layer` that learns on its own: no shared parameter names (they would tie it to
    the original's weights), and a BatchNorm that computes its statistics in TRAIN."""
    copy = layer.copy()
    for spec in copy.get_all("param"):
        spec.remove("name")
    if _frozen_norm(copy):
        copy.get("batch_norm_param").remove("use_global_stats")  # Caffe's default: batch stats in TRAIN
    return copy


def _frozen_norm(layer):
    param = layer.get("batch_norm_param") if layer.get("type") == "BatchNorm" else None
    return param is not None and param.get("use_global_stats") in (True, 1)


def _dead(filler):
    """A weight filler that makes every weight 0 (none given: Caffe's default constant 0)."""
    if filler is None:
        return True
    return str(filler.get("type", "constant")) == "constant" and not filler.get("value", 0)


def _rewire(later_layers, old, new):
    """Layers after the insertion read `new` where they read `old` (in-place ones write it too)."""
    for layer in later_layers:
        in_place = _in_place(layer, old)
        _replace(layer, "bottom", old, new)
        if in_place:
            _replace(layer, "top", old, new)
        elif old in layer.get_all("top"):
            return  # `old` is rewritten from here on: later readers mean that one


Rewritten = collections.namedtuple("Rewritten", "layers replicas")
Rewritten.__doc__ = """What a rewrite added: the names of the layers it inserted, and of those that are replicas."""


def known_shape(inferred, blob, option):
    """The shape of `blob` from `inferred` (shapes.infer's (shapes, layers)), or the ConfigError of
    shapes.require, which says where the unknown shape starts, behind `option`."""
    try:
        return tuple(inference.require(inferred[0], inferred[1], blob))
    except ConfigError as error:
        raise ConfigError("%s: %s" % (option, error)) from None


def check_replicable(layer, inferred):
    kind = layer.get("type")
    name = layer.get("name")
    if is_data(layer):
        raise ConfigError("--replicate %s: %s is a data layer; replicate a layer that computes on a blob"
                          % (name, kind))
    if is_loss(kind) or kind == "Accuracy":
        raise ConfigError("--replicate %s: %s is a loss or accuracy layer; replicate a weight layer "
                          "such as a Convolution before it" % (name, kind))
    if len(layer.get_all("top")) != 1 or len(layer.get_all("bottom")) != 1:
        raise ConfigError("--replicate %s: only layers with one bottom and one top can be replicated, "
                          "%s has %d and %d" % (name, kind, len(layer.get_all("bottom")), len(layer.get_all("top"))))
    if kind not in CONV_TYPES and kind != "InnerProduct":
        option = "--replicate %s: whether a %s layer keeps the shape depends on its input" % (name, kind)
        got = tuple(known_shape(inferred, blob, option) for blob in (layer.get("bottom"), layer.get("top")))
        if got[0] != got[1]:
            raise ConfigError("--replicate %s: a %s layer maps %s to %s, so a replica of it cannot take its "
                              "own output; replicate a Convolution or InnerProduct instead" % (name, kind, *got))


def replicate(net, name, count, dropins=None, inferred=({}, []), p_top=False, activation=None, kernel=None,
              filler=None, names=None, notices=None):
    """Insert `count` replicas of layer `name` after it (see the module docstring); returns `Rewritten`.

    dropins: the param_str config of each replica's DropIn (a list of `count`, from `plan.Plan.joins`),
    or None for plain replicas. inferred: `shapes.infer(net)` (a layer that is not a conv or fc
    layer is replicated only if it keeps its input's shape).
    activation: a type ("ReLU") appended in place to replicas whose unit has no activation.
    kernel, filler: override the replicas' kernel size and weight filler (a Message).
    names: explicit replica names (default NAME_1 ... NAME_K).
    """
    notices = notices if notices is not None else []
    original = find_layer(net, name)
    check_replicable(original, inferred)
    members = unit(net, original)
    names = names or ["%s_%d" % (name, i) for i in range(1, count + 1)]
    if len(names) != count:
        raise ConfigError("--replicate %s: %d names given for %d replicas" % (name, len(names), count))
    taken = _names(net) | _blobs(net)
    end = members[-1].get("top")  # the unit's output: what the replicas read and the DropIns join
    chain, inserted, replicas = end, [], []
    for index, replica_name in enumerate(names, 1):
        replica, changed, given = _replica(original, _fresh(taken, replica_name), chain, kernel, filler)
        replicas.append(replica.get("name"))
        if index == 1:
            if changed:
                notices.append("replicas of %s use stride 1 and \"same\" padding so that they keep the blob's shape"
                               % name)
            if given is not None and filler is None:
                notices.append("replicas of %s get weight_filler %s: %s has none (Caffe's default, constant 0, "
                               "would make them output 0 and never learn); --replica-std STD gives gaussian "
                               "weights instead" % (name, given.get("type"), name))
            frozen = [m.get("name") for m in members if _frozen_norm(m)]
            if frozen:
                notices.append("replicas of %s train their BatchNorm statistics: use_global_stats: true of %s is "
                               "not copied" % (name, ", ".join(frozen)))
        followers = [(_fresh_copy(m), _in_place(m, m.get("bottom"))) for m in members[1:]]
        if activation and not any(m.get("type") in ACTIVATION_TYPES for m in members):
            followers.append((Message([["name", ""], ["type", activation]]), True))
        block, blob = _chain(replica, followers, taken)
        if dropins is not None:
            join = _fresh(taken, replica_name + "_dropin")
            if p_top:
                _fresh(taken, join + "_p")
            block.append(dropin_layer(join, chain, blob, join, dropins[index - 1], p_top))
            chain = join
        else:
            chain = blob
        inserted += block
    _insert_after(net, members[-1], inserted)
    all_layers = layers(net)
    _rewire(all_layers[all_layers.index(inserted[-1]) + 1:], end, chain)
    return Rewritten([layer.get("name") for layer in inserted], replicas)


def _chain(head, followers, taken):
    """[head, followers...] wired one after the other from head's top, the followers named after
    head and their type (conv3_1_relu, ...); returns (layers, the last top)."""
    block, blob = [head], head.get("top")
    for follower, in_place in followers:
        base = "%s_%s" % (head.get("name"), follower.get("type").lower())
        follower.set("name", _fresh(taken, next(
            n for n in [base] + ["%s%d" % (base, i) for i in range(2, 99)] if n not in taken)))
        follower.set("bottom", blob)
        if not in_place:
            blob = follower.get("name")
        follower.set("top", blob)
        block.append(follower)
    return block, blob


def _insert_after(net, anchor, new_layers):
    position = next(i for i, (key, value) in enumerate(net.fields) if value is anchor)
    for offset, layer in enumerate(new_layers, 1):
        net.insert(position + offset, "layer", layer)


def _producer(net, blob, before):
    """The nearest layer before `before` that computes `blob` (skipping in-place layers)."""
    all_layers = layers(net)
    for layer in reversed(all_layers[:all_layers.index(before)]):
        if blob in layer.get_all("top") and not _in_place(layer, blob):
            return layer
    return None


def common_ancestor(net, blob, before):
    """The nearest blob upstream of `blob` (as layer `before` reads it) through which every path
    from the net's inputs passes: its immediate dominator in the graph of blobs, in-place layers
    being aliases. For a chain it is the input of the layer that makes `blob`; after a Concat or
    Eltwise, the blob the branches split from. None when only the inputs themselves qualify."""
    dominators, order, current = {}, {}, {}  # node (blob, version) -> nodes every path passes through
    for layer in layers(net)[:layers(net).index(before)]:
        bottoms = [current.get(b) for b in layer.get_all("bottom")]
        for top in layer.get_all("top"):
            if _in_place(layer, top):
                continue
            node = (top, order.setdefault(top, 0) + 1)
            order[top] = node[1]
            if bottoms and None not in bottoms:
                shared = set.intersection(*(dominators[b] for b in bottoms))
            else:
                shared = set()  # an input (or a blob from nowhere): only the inputs come before it
            dominators[node] = shared | {node}
            current[top] = node
    node = current.get(blob)
    if node is None:
        return None
    ancestors = dominators[node] - {node}
    ranked = sorted(ancestors, key=lambda n: len(dominators[n]))  # the nearest has the most dominators
    if not ranked:
        return None
    nearest = ranked[-1]
    return nearest[0] if current.get(nearest[0]) == nearest else None


def regularize(net, name, dropin, inferred, p_top=False, notices=None, prev=None):
    """Replace Dropout layer `name` by a regularizing DropIn (its param_str config `dropin`, with
    "mode": "regularize" and "p_new"); returns `Rewritten`.

    new is the Dropout's input; prev is the blob `prev` when given, else `common_ancestor` of new
    (the input of the layer that makes it, or what a Concat's branches split from), flattened and
    resized (Resize) to new's shape where they differ. A note names prev and its shape.
    inferred: `shapes.infer(net)`, for the shapes of prev and new."""
    notices = notices if notices is not None else []
    p_new = dropin["p_new"]
    dropout = find_layer(net, name, "--regularize")
    if dropout.get("type") != "Dropout":
        raise ConfigError("--regularize %s: needs a Dropout layer, %s is a %s layer"
                          % (name, name, dropout.get("type")))
    new = dropout.get("bottom")
    maker = _producer(net, new, dropout)
    if prev is not None:
        if prev == new or _producer(net, prev, dropout) is None:
            raise ConfigError("--regularize %s=%s:%s: prev must be a blob made before %s other than its input %r; "
                              "choose one of the blobs listed by the summary" % (name, p_new, prev, name, new))
        why = "as given"
    else:
        if maker is None or not maker.get_all("bottom") or common_ancestor(net, new, dropout) is None:
            raise ConfigError("--regularize %s: no layer before it computes %r from an input, so DropIn has no "
                              "prev to take units from" % (name, new))
        prev = common_ancestor(net, new, dropout)
        why = "the nearest blob before %s '%s' that every path from the net's inputs passes through" % (
            maker.get("type"), maker.get("name"))
    prev_shape = known_shape(inferred, prev, "--regularize %s: prev" % name)
    new_shape = known_shape(inferred, new, "--regularize %s: new" % name)
    note = "--regularize %s: prev is '%s' %s, %s" % (name, prev, prev_shape, why)
    taken = _names(net) | _blobs(net)
    block, shape, source = [], prev_shape, prev
    if len(shape) != len(new_shape):
        if len(new_shape) != 2:
            raise ConfigError("--regularize %s: cannot match prev %r %s to new %r %s"
                              % (name, prev, prev_shape, new, new_shape))
        flat = _fresh(taken, "%s_flat" % prev)
        block.append(Message([["name", flat], ["type", "Flatten"], ["bottom", prev], ["top", flat]]))
        source, shape = flat, (shape[0], int(math.prod(shape[1:])))
    if shape != tuple(new_shape):
        resized = _fresh(taken, "%s_resized" % source)
        block.append(resize_layer(resized, source, resized, new_shape))
        note += "; resized to %s by a Resize layer" % (tuple(new_shape),)
        source = resized
    notices.append(note)
    join = _fresh(taken, name + "_dropin")
    top = join if dropout.get("top") == new else dropout.get("top")  # an in-place Dropout's blob was `new`
    block.append(dropin_layer(join, source, new, top, dropin, p_top))
    _insert_after(net, dropout, block)
    net.fields = [field for field in net.fields if field[1] is not dropout]
    all_layers = layers(net)
    _rewire(all_layers[all_layers.index(block[-1]) + 1:], new, top)
    return Rewritten([layer.get("name") for layer in block], [])


def _consumers(later_layers, blob):
    """(names of the layers with learned parameters whose input grows with `blob`'s channels, names of
    the loss and accuracy layers it reaches): through the layers that carry channels along (Pooling,
    ReLU, BatchNorm, Concat, ...) up to the first weight layer on each path."""
    grown, learned, final = {blob}, [], []
    for layer in later_layers:
        if not grown & set(layer.get_all("bottom")):
            continue
        kind = layer.get("type")
        if is_loss(kind) or kind == "Accuracy":
            final.append(layer.get("name"))
        if kind in LEARNED_TYPES:
            learned.append(layer.get("name"))
        if kind not in WEIGHT_TYPES:
            grown |= set(layer.get_all("top"))
    return learned, final


def _axis(layer):
    param = layer.get("convolution_param") or layer.get("inner_product_param") or Message([])
    return param.get("axis", 1)


def check_widenable(net, name, width, inferred):
    """The layer `name` if it can be widened to `width` outputs (a conv or fc layer with one bottom
    and top, axis 1, group 1, fewer outputs, a known output shape, whose output reaches no loss),
    else a ConfigError saying why: (layer, its output shape, its unit, the learned consumers)."""
    option = "--widen %s=%s" % (name, width)
    original = find_layer(net, name, "--widen")
    kind = original.get("type")
    if kind not in CONV_TYPES and kind != "InnerProduct":
        raise ConfigError("%s: only a Convolution, Deconvolution or InnerProduct layer can be widened, %s is a "
                          "%s layer" % (option, name, kind))
    if len(original.get_all("top")) != 1 or len(original.get_all("bottom")) != 1:
        raise ConfigError("%s: only a layer with one bottom and one top can be widened, %s has %d and %d"
                          % (option, name, len(original.get_all("bottom")), len(original.get_all("top"))))
    param = original.get("convolution_param") or original.get("inner_product_param")
    if _axis(original) != 1:
        raise ConfigError("%s: units are widened along axis 1, %s computes along axis %s; widen a layer with "
                          "the default axis" % (option, name, _axis(original)))
    if param.get("group", 1) != 1:
        raise ConfigError("%s: a grouped convolution (group: %s) cannot be widened; widen a layer with group 1"
                          % (option, param.get("group")))
    outputs = param.get("num_output")
    if type(width) is not int or not isinstance(outputs, int) or width <= outputs:
        raise ConfigError("%s: C2, the widened number of outputs, must be an integer above %s's num_output %s"
                          % (option, name, outputs))
    shape = known_shape(inferred, original.get("top"), "%s: %s's output" % (option, name))
    members = unit(net, original)
    all_layers = layers(net)
    learned, final = _consumers(all_layers[all_layers.index(members[-1]) + 1:], members[-1].get("top"))
    if final:
        raise ConfigError("%s: %s's output reaches the loss or accuracy layer %s, so widening it would change "
                          "the net's outputs; widen a hidden layer" % (option, name, final[0]))
    return original, shape, members, learned


def widen(net, name, width, dropin, inferred, p_top=False, notices=None):
    """Grow layer `name` (Convolution, Deconvolution or InnerProduct, C outputs) to `width` = C2
    outputs by gradual DropIn (see the module docstring); returns `Rewritten`.

    The layer keeps its C units (its name and weights); the extra layer NAME_extra, a fresh copy
    with the same bottom and geometry, computes the C2 - C others. Each part has its own copy of
    the layer's followers, so a follower that mixes channels (LRN across channels) never mixes the
    two parts and the first C units stay exactly the layer's. new = Concat NAME_wide of both ends
    (C2 channels), prev = the layer's end zero-padded to C2 channels by Resize NAME_padded, joined by
    DropIn NAME_widen (param_str config `dropin`; None: the plain wide net), which the layer's
    consumers read; a note names those with learned parameters. inferred: `shapes.infer(net)`.
    """
    notices = notices if notices is not None else []
    original, shape, members, learned = check_widenable(net, name, width, inferred)
    outputs = (original.get("convolution_param") or original.get("inner_product_param")).get("num_output")
    end = members[-1].get("top")
    taken = _names(net) | _blobs(net)
    extra = _fresh_copy(original)
    extra.set("name", _fresh(taken, name + "_extra"))
    extra.set("top", extra.get("name"))
    extra_param = extra.get("convolution_param") or extra.get("inner_product_param")
    extra_param.set("num_output", width - outputs)
    if _dead(extra_param.get("weight_filler")):
        given = "msra" if original.get("type") in CONV_TYPES else "xavier"
        extra_param.set("weight_filler", Message([["type", given]]))
        notices.append("the extra units of %s get weight_filler %s: %s has none (Caffe's default, constant 0, "
                       "would make them output 0 and never learn)" % (name, given, name))
    followers = [(_fresh_copy(m), _in_place(m, m.get("bottom"))) for m in members[1:]]
    block, extra_end = _chain(extra, followers, taken)
    wide = _fresh(taken, name + "_wide")
    block.append(Message([["name", wide], ["type", "Concat"], ["bottom", end], ["bottom", extra_end], ["top", wide]]))
    join = wide  # without DropIn (the plain baseline) the consumers read the Concat: the wide net itself
    if dropin is not None:
        padded = _fresh(taken, name + "_padded")
        block.append(resize_layer(padded, end, padded, (shape[0], width)))
        join = _fresh(taken, name + "_widen")
        if p_top:
            _fresh(taken, join + "_p")
        block.append(dropin_layer(join, padded, wide, join, dropin, p_top))
    _insert_after(net, members[-1], block)
    all_layers = layers(net)
    _rewire(all_layers[all_layers.index(block[-1]) + 1:], end, join)
    if learned:
        one = len(learned) == 1
        them = "it" if one else "them"
        notices.append("--widen %s=%d: %s read%s %d channels instead of %d, so Caffe gives %s more input weights; "
                       "a --weights file trained before the widening cannot load %s (Caffe stops on the shape "
                       "mismatch): rename %s to start %s fresh, or give expand_net the trained model with "
                       "--weights, which starts %s zero-padded" % (name, width, ", ".join(learned),
                                                                   "s" if one else "", width, outputs, them, them,
                                                                   them, them, them))
    return Rewritten([layer.get("name") for layer in block], [])


# Layers that act on each channel alone (or only move data within it), through which a widened
# output may reach its weighted consumers when --weights zero-pads their new input weights.
CHANNELWISE_TYPES = (FOLLOWER_TYPES - {"LRN"}) | {"Pooling", "Flatten", "Split", "AbsVal", "Power", "Exp", "Log",
                                                 "BNLL", "Threshold", "Clip", "Swish"}


def zero_paddable(net, name, width):
    """(the weighted consumers of layer `name`'s widened output, the per-channel learned layers on the
    way to them) in `net` (the original), for `--widen NAME=C2 --weights`: zero input weights for the
    new channels keep the trained function only if the channels reach each consumer unmixed and in
    place, and the consumer reads all of them (group 1). ConfigError naming the layer otherwise."""
    members = unit(net, find_layer(net, name, "--widen"))
    all_layers = layers(net)
    grown, weighted, channelwise = {members[-1].get("top")}, [], []
    for layer in all_layers[all_layers.index(members[-1]) + 1:]:
        if not grown & set(layer.get_all("bottom")):
            continue
        why = _mixes(layer)
        if why:
            raise ConfigError("--widen %s=%s with --weights: %s %s, so zero input weights for the new channels "
                              "cannot keep the trained function; widen without --weights, or widen a layer whose "
                              "output reaches its consumers through channel-wise layers only"
                              % (name, width, layer.get("name"), why))
        if layer.get("type") in WEIGHT_TYPES:
            weighted.append(layer)
            continue
        if layer.get("type") in LEARNED_TYPES:
            channelwise.append(layer)
        grown |= set(layer.get_all("top"))
    return weighted, channelwise


def _mixes(layer):
    """Why the widened channels cannot be zero-padded through `layer`, or None."""
    kind = str(layer.get("type"))
    param = layer.get("convolution_param") or layer.get("inner_product_param") or Message([])
    if kind in WEIGHT_TYPES:
        if int(param.get("group", 1)) != 1:
            return "is a grouped %s (group: %s): each group reads its own slice of the channels, which the new " \
                   "ones shift" % (kind, param.get("group"))
        if int(_axis(layer)) != 1:
            return "computes along axis %s, not the channels' axis 1" % _axis(layer)
        return None
    if kind == "LRN":
        region = str((layer.get("lrn_param") or Message([])).get("norm_region", "ACROSS_CHANNELS"))
        return None if region == "WITHIN_CHANNEL" else "(LRN across channels) mixes the channels"
    if kind not in CHANNELWISE_TYPES:
        return "(%s) mixes or moves the channels before a weighted layer reads them" % kind
    return None


def widened_parts(net, name):
    """(the layer `name`'s unit, its extra layer's chain) in `net` after `widen`: the extra layer and
    its copied followers come right after the unit, one copy per follower."""
    members = unit(net, find_layer(net, name, "--widen"))
    all_layers = layers(net)
    end = all_layers.index(members[-1])
    return members, all_layers[end + 1:end + 1 + len(members)]


def dropin_configs(net):
    """(layer, config) for every DropIn layer, in net order."""
    found = []
    for layer in layers(net):
        if our_layer(layer) == "DropIn":
            found.append((layer, json.loads(layer.get("python_param").get("param_str", "{}") or "{}")))
    return found


def to_native(net):
    """Our Python layers become the native ones (dropin_caffe.native): the type line alone changes."""
    native = {kind: name for name, kind in NATIVE_TYPES.items()}
    for layer in layers(net):
        kind = our_layer(layer)
        if kind and layer.get("type") == "Python":
            layer.set("type", native[kind])
    return net


def gaussian_filler(std):
    return Message([["type", "gaussian"], ["std", float(std)]])
