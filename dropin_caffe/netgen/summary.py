"""The summary expand_net prints: every layer with its output shapes and parameter count, our
layers marked, and totals (weight layers, parameters) for the net before and after.

`rows` and `totals` give the table as data (what `Expansion.rows` holds); `render` writes it.
"""
import typing

from .vocabulary import WEIGHT_TYPES, our_layer


class Row(typing.NamedTuple):
    """One layer: its name, its type (DropIn/Resize for ours), its tops' shapes (tuples, None =
    unknown) in the phase summarised, its parameter count (None = unknown), marked = ours."""
    layer: str
    type: str
    shapes: list
    params: typing.Optional[int]
    marked: bool


class Totals(typing.NamedTuple):
    """A net's weight layers (Convolution, Deconvolution, InnerProduct), its parameter count
    (None = unknown; Python layers' blobs, such as our counters, not included) and its DropIn/Resize
    layers."""
    weight_layers: int
    parameters: typing.Optional[int]
    ours: int


def rows(net, layer_shapes):
    """Rows for `net` from its `shapes.infer` layers (`layer_shapes`), in net order."""
    trees = {str(layer.get("name", "")): layer for layer in net.get_all("layer")}
    found = []
    for info in layer_shapes:
        tree = trees.get(info.name)
        ours = our_layer(tree) if tree is not None else None
        found.append(Row(info.name, ours or info.type, [shape for _, shape in info.tops], info.params, bool(ours)))
    return found


def totals(table):
    """The Totals of a net's rows."""
    weights = sum(1 for row in table if row.type in WEIGHT_TYPES)
    learnable = [row.params for row in table if row.type != "Python" and not row.marked]
    return Totals(weights, None if None in learnable else sum(learnable), sum(1 for row in table if row.marked))


def format_shape(shape):
    if shape is None:
        return "?"
    return "x".join(map(str, shape)) if shape else "scalar"


def render(table, original, expanded, phase="TRAIN"):
    """The text table of `table` (rows), then the totals line (Totals before and after)."""
    lines = [("*" if row.marked else " ") + row.layer for row in table]
    cells = [(name, row.type, ", ".join(format_shape(shape) for shape in row.shapes) or "-",
              "?" if row.params is None else "{:,}".format(row.params)) for name, row in zip(lines, table)]
    header = (" layer", "type", "output (%s)" % phase, "params")
    widths = [max(len(cell[i]) for cell in cells + [header]) for i in range(4)]
    out = ["%-*s  %-*s  %-*s  %*s" % (widths[0], a, widths[1], b, widths[2], c, widths[3], d)
           for a, b, c, d in [header] + cells]
    count = lambda n: "?" if n is None else "{:,}".format(n)  # noqa: E731
    out.append("original: %d weight layers, %s parameters; expanded: %d weight layers, %s parameters, "
               "%d DropIn/Resize layers (*)" % (original.weight_layers, count(original.parameters),
                                                 expanded.weight_layers, count(expanded.parameters), expanded.ours))
    unknown = sum(1 for cell in cells if "?" in cell[2])
    if unknown:
        out.append("%d layers have outputs of unknown shape (?): a layer type shape inference does not know, or "
                   "a data layer without a shape (give it with --input-shape BLOB=C,H,W)" % unknown)
    return "\n".join(out)
