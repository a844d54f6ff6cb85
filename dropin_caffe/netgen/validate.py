"""Prove a net in Caffe: build it with `caffe.Net`, run one forward and backward pass, and check
that every blob has the shape `shapes.infer` worked out.

Nets usually read databases that are not on this machine (or not in the current directory,
which is where Caffe resolves relative sources), so `with_dummy_data` swaps each data layer
whose source is missing for a DummyData layer with the same name, tops and inferred shapes
(gaussian data, constant 0 labels). A MemoryData layer is always swapped: it has no source and
waits for arrays from Python. So are Python and fork data layers whose shapes are known, and
an Input whose declared shape --input-shape replaced.

Caffe stops the whole process (glog's CHECK) on many bad nets, so everything this module can
check first it checks first, as ConfigError: shapes (by inference), the text (by caffe_pb2),
layer types (Caffe's registry) and Python layer modules. Caffe is imported inside the functions
that need it; importing this module needs neither Caffe nor numpy.
"""
import contextlib
import importlib
import os
import sys
import tempfile

from .. import native
from ..errors import ConfigError, DropInCaffeError, clip
from . import prototxt
from .prototxt import Enum, Message
from .shapes import infer, phase_net, replaced_input
from .vocabulary import SOURCE_PARAMS, is_native
from .vocabulary import phase as _phase


def _source_missing(layer):
    if str(layer.get("type")) == "MemoryData":
        return True
    param = layer.get(SOURCE_PARAMS[str(layer.get("type"))])
    source = param.get("source") if param is not None else None
    return not source or not os.path.exists(str(source))


def _files_missing(layer):
    """A source layer whose source or mean file is not here: Caffe would abort the process on it."""
    mean = (layer.get("transform_param") or Message()).get("mean_file")
    return _source_missing(layer) or (mean is not None and not os.path.exists(str(mean)))


def source_shapes(net, phase, input_shapes=None):
    """{top: shape} of the data tops of `net` in `phase` that inference (with `input_shapes`) leaves
    unknown, as Caffe reads them from their sources when those are here (a Data layer's first datum,
    cropped as its transform_param says): Caffe builds those data layers alone. Layers whose source
    or mean file is missing are left out (Caffe would abort the process on them), and so is
    everything when Caffe cannot import or build them."""
    _, inferred = infer(net, phase, input_shapes)
    wanted = {top for layer in inferred if layer.type in SOURCE_PARAMS for top, shape in layer.tops if shape is None}
    layers = [layer for layer in phase_net(net, phase).get_all("layer") if str(layer.get("type")) in SOURCE_PARAMS
              and wanted & set(layer.get_all("top")) and not _files_missing(layer)]
    if not layers:
        return {}
    try:
        built = load_net(Message([["layer", layer] for layer in layers]), phase)
    except (ImportError, ConfigError):
        return {}
    return {top: tuple(built.blobs[top].data.shape) for layer in layers for top in layer.get_all("top")
            if top in wanted}


def dummy_layer(layer, shapes):
    """A DummyData layer standing in for data layer `layer`: same name and tops, the shapes in
    `shapes`; the first top gaussian (the data), the others constant 0 (labels, valid classes)."""
    tops = [str(top) for top in layer.get_all("top")]
    unknown = [top for top in tops if shapes.get(top) is None]
    if unknown:
        why = "its source is not here, so Caffe cannot read the shape of"
        if str(layer.get("type")) == "Python":
            why = "its module %r is not importable here, so Caffe cannot make" % str(
                (layer.get("python_param") or Message()).get("module", ""))
        raise ConfigError("%s '%s': %s %s; give it with --input-shape %s=C,H,W (or N,C,H,W)"
                          % (layer.get("type"), layer.get("name"), why, ", ".join(map(repr, unknown)), unknown[0]))
    param = Message()
    for i in range(len(tops)):
        filler = [["type", "gaussian"], ["std", 1.0]] if i == 0 else [["type", "constant"], ["value", 0.0]]
        param.add("data_filler", Message(filler))
    for top in tops:
        param.add("shape", Message([["dim", dim] for dim in shapes[top]]))
    return Message([["name", layer.get("name", "")], ["type", "DummyData"]] +
                   [["top", top] for top in tops] + [["dummy_data_param", param]])


def with_dummy_data(net, phase, shapes, stages=()):
    """The layers of `net` that Caffe keeps in `phase`, each data layer Caffe cannot run here as
    inferred replaced by a DummyData layer of the inferred shapes (see `dummy_layer`): a source
    layer whose source is missing, an Input whose declared shape --input-shape replaced, and any
    other layer without bottoms whose shapes are known (a Python data layer, whose module may
    not be importable; a fork's data layer). Every other layer untouched."""
    kept = phase_net(net, phase, stages)
    for field in kept.fields:
        if field[0] == "layer" and _stand_in_needed(field[1], shapes):
            field[1] = dummy_layer(field[1], shapes)
    return kept


# The filler types of Caffe 1.0's GetFiller (filler.hpp); any other name is LOG(FATAL), which
# aborts the whole process while the layer sets up.
FILLERS = ("constant", "gaussian", "positive_unitball", "uniform", "xavier", "msra", "bilinear")


def check_fillers(layer):
    """Raise ConfigError if a filler anywhere in `layer` (weight_filler, bias_filler, filler,
    data_filler, ...) has a type Caffe 1.0 does not know."""
    pending = [layer]
    while pending:  # a walk, not recursion: a parsed net may nest deeply
        message = pending.pop()
        for key, value in message.fields:
            if not isinstance(value, Message):
                continue
            if key.endswith("filler"):
                kind = str(value.get("type", "constant"))
                if kind not in FILLERS:
                    raise ConfigError("layer '%s': %s type must be one of Caffe's fillers (%s), got %s; Caffe "
                                      "would abort on it" % (clip(str(layer.get("name", ""))), key,
                                                             ", ".join(FILLERS), clip(repr(kind))))
            pending.append(value)


def _stand_in_needed(layer, shapes):
    kind, tops = str(layer.get("type")), [str(top) for top in layer.get_all("top")]
    if kind in SOURCE_PARAMS:
        return _source_missing(layer)
    if kind == "Input":
        return replaced_input(layer, shapes) is not None
    if kind == "DummyData" or layer.get_all("bottom") or not tops:
        return False
    if kind == "Python" and not _importable(str((layer.get("python_param") or Message()).get("module", ""))):
        return True  # Caffe cannot run it: a DummyData must stand in, so its shapes are needed
    return None not in [shapes.get(top) for top in tops]


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def for_caffe(net):
    """`net` as this Caffe 1.0 reads it: the well-known fork fields that change shapes translated
    (Pooling `ceil_mode: false` is `round_mode: FLOOR`, `ceil_mode: true` the default CEIL)."""
    net = net.copy()
    for layer in net.get_all("layer"):
        param = layer.get("pooling_param") if str(layer.get("type")) == "Pooling" else None
        if param is not None and "ceil_mode" in param:
            ceil = param.get("ceil_mode") in (True, 1)
            param.remove("ceil_mode")
            if not ceil and "round_mode" not in param:
                param.add("round_mode", Enum("FLOOR"))
    return net


def _check_for_caffe(net, text, phase, stages):
    import caffe
    prototxt.check_with_caffe_pb2(text, "net", tree=net)
    known = set(caffe.layer_type_list())
    for layer in phase_net(net, phase, stages).get_all("layer"):
        kind, name = str(layer.get("type")), layer.get("name")
        if kind not in known:
            raise ConfigError("layer '%s': this Caffe has no layer type %r; its types: %s"
                              % (name, kind, ", ".join(sorted(known))))
        check_fillers(layer)
        if kind == "Python":
            param = layer.get("python_param") or Message()
            module, cls = str(param.get("module", "")), str(param.get("layer", ""))
            try:
                found = hasattr(importlib.import_module(module), cls)
            except ImportError as error:
                raise ConfigError("Python layer '%s': cannot import module %r (%s); put it on PYTHONPATH"
                                  % (name, module, error)) from None
            if not found:
                raise ConfigError("Python layer '%s': module %r has no layer class %r" % (name, module, cls))


@contextlib.contextmanager
def quiet_glog():
    """Keep Caffe's glog lines (a net's whole text each time Caffe builds one) off the screen, as
    the command lines do with GLOG_minloglevel=2, which glog reads only when Caffe loads: file
    descriptor 2 goes to a temporary file meanwhile, shown only if the block fails. Nothing is
    captured when GLOG_minloglevel is set: the caller chose, and a message before an abort shows."""
    if "GLOG_minloglevel" in os.environ:
        yield
        return
    sys.stderr.flush()
    saved, capture, failed = os.dup(2), tempfile.TemporaryFile(), True
    os.dup2(capture.fileno(), 2)
    try:
        yield
        failed = False
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
        capture.close()


def load_net(net_message, phase, stages=()):
    """A caffe.Net built from `net_message` in `phase` ("TRAIN"/"TEST"); the text is checked with
    caffe_pb2 and the layer types against Caffe's registry first, so a bad net is a ConfigError
    rather than a Caffe abort."""
    import caffe
    phase = _phase(phase)
    text = prototxt.dumps(net_message)
    if any(is_native(layer) for layer in net_message.get_all("layer")):
        native.load()  # before Caffe meets the type, else glog aborts the process
    _check_for_caffe(net_message, text, phase, stages)
    handle, path = tempfile.mkstemp(prefix="dropin-caffe-net.", suffix=".prototxt")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        try:
            with quiet_glog():
                return caffe.Net(path, getattr(caffe, phase), stages=list(stages))
        except Exception as error:  # pycaffe reports a Python layer's failures as assorted types
            raise ConfigError("Caffe could not build the net in phase %s: %s: %s"
                              % (phase, type(error).__name__, error)) from None
    finally:
        os.remove(path)


def caffe_shapes(caffe_net):
    """Blob name -> shape tuple, for every blob of a caffe.Net (Caffe's own split blobs included)."""
    return {name: tuple(blob.shape) for name, blob in caffe_net.blobs.items()}


def check_net(net_message, phase, input_shapes=None, stages=()):
    """Infer, swap missing data for DummyData, build in Caffe, run forward and backward once, and
    compare every inferred blob shape with Caffe's.

    Raises ConfigError naming the first blob (in net order) whose shapes differ. Returns Caffe's
    shapes of the blobs the net names (so also those inference left unknown).
    """
    shapes, layers = infer(net_message, phase, input_shapes, stages)
    caffe_net = load_net(with_dummy_data(net_message, phase, shapes, stages), phase, stages)
    caffe_net.forward()
    caffe_net.backward()
    got = caffe_shapes(caffe_net)
    for layer in layers:
        for blob, _ in layer.tops:
            shape = shapes[blob]  # as after the last layer that writes it, like Caffe's blob
            if shape is not None and got.get(blob) != shape:
                raise ConfigError("blob '%s' (top of %s '%s'): shape inference gives %s, Caffe %s in phase %s; "
                                  "check the shapes given with --input-shape, else please report this net"
                                  % (blob, layer.type, layer.name, shape, got.get(blob), phase))
    return {blob: got[blob] for blob in shapes if blob in got}


def prove(original, net, solver, shapes):
    """Check an expansion with the Caffe in use: caffe_pb2 parses the emitted net and solver, and
    caffe.Net builds the net in TRAIN and TEST (at batch 1, so that even VGG takes seconds).

    Data layers Caffe cannot run here are replaced by DummyData of the inferred shapes
    (`with_dummy_data`), and well-known fork fields translated (`for_caffe`), so that the rest of
    the net is still built. `shapes` maps each phase to the net's inferred shapes. Returns notes
    for the checks that could not be made (no Caffe here; an input net this Caffe's caffe_pb2
    rejects; compute layers of types this Caffe lacks). Raises ConfigError where Caffe rejects
    the emitted files (a Python compute layer whose module is not importable, ...).
    """
    notes = []
    try:
        stand_ins = {phase: for_caffe(with_dummy_data(original, phase, shapes[phase])) for phase in shapes}
    except ConfigError as error:  # a data layer Caffe cannot run here, of a shape no rewrite needed
        return _parsed_only(net, solver, "Caffe cannot build the net here (%s): the emitted files were checked by "
                                         "caffe_pb2 and shape inference only" % error)
    try:
        if not all(prototxt.check_with_caffe_pb2(prototxt.dumps(stand_ins[phase]), "net") for phase in shapes):
            return ["Caffe is not importable here: the emitted files were checked by shape inference only"]
    except ConfigError:
        return _parsed_only(None, solver, "this Caffe's caffe_pb2 rejects the input net (a fork's layers or "
                                          "fields?): the emitted net was checked by shape inference only")
    prototxt.check_with_caffe_pb2(prototxt.dumps(for_caffe(net)), "net", filename="the emitted net")
    if solver is not None:
        prototxt.check_with_caffe_pb2(prototxt.dumps(solver), "solver", filename="the emitted solver")
    if any(is_native(layer) for layer in net.get_all("layer")):
        try:
            native.load()
        except DropInCaffeError as error:
            return notes + ["the native layers could not be loaded (%s): the emitted net was checked by caffe_pb2 "
                            "and shape inference, not built" % error]
    import caffe
    known = set(caffe.layer_type_list())
    unknown = sorted({str(layer.get("type")) for phase in shapes for layer in stand_ins[phase].get_all("layer")}
                     - known)
    if unknown:
        return notes + ["this Caffe has no layer type %s (a fork's?): the emitted net was checked by caffe_pb2 "
                        "and shape inference, not built" % ", ".join(unknown)]
    for phase in ("TRAIN", "TEST"):
        build(net, phase, shapes)
    return notes


def _parsed_only(net, solver, note):
    """[note], once caffe_pb2 has parsed the emitted net (unless None) and solver."""
    if net is not None and prototxt.check_with_caffe_pb2(prototxt.dumps(for_caffe(net)), "net",
                                                         filename="the emitted net") is False:
        return ["Caffe is not importable here: the emitted files were checked by shape inference only"]
    if solver is not None:
        prototxt.check_with_caffe_pb2(prototxt.dumps(solver), "solver", filename="the emitted solver")
    return [note]


def build(net, phase, shapes):
    """A caffe.Net of `net` in `phase` as `prove` builds it: data Caffe cannot run here as DummyData
    of `shapes[phase]`, fork fields translated, at batch 1."""
    return load_net(_at_batch_one(for_caffe(with_dummy_data(net, phase, shapes[phase]))), phase)


def _at_batch_one(net):
    """`net` with every DummyData and Input shape's first dim set to 1 (in place; returned)."""
    for layer in net.get_all("layer"):
        for key in ("dummy_data_param", "input_param"):
            param = layer.get(key)
            for shape in param.get_all("shape") if param is not None else ():
                if shape.get_all("dim"):
                    shape.fields[[f[0] for f in shape.fields].index("dim")][1] = 1
            for field in param.fields if param is not None else ():
                if field[0] == "num":  # DummyData's old num/channels/height/width form
                    field[1] = 1
    return net
