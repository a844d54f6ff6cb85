"""Draw a net with Graphviz's dot, blob shapes on the edges, DropIn and Resize highlighted.

Caffe's own draw.py needs pydot and shows no shapes. Here in-place layers (ReLU, in-place LRN,
BatchNorm, ...) are folded into the node of the layer they act on, so a deep chain stays readable.
`dot_source` writes the DOT text (pure); `render` runs the `dot` binary on it. dot places edge
labels as nodes of their own and routes edges around boxes, so labels neither cover boxes nor run
together, even in a 150-layer residual net. Skip edges (spanning several ranks) are dashed and grey,
branch edges (one of several out of a node) grey; only DropIn and Resize nodes get a highlight
fill.

Without Graphviz, `draw_net` draws today's matplotlib picture: boxes placed by rank (longest path
from the data layers), left to right within a rank.
"""
import os
import shutil
import subprocess

from ..errors import ConfigError
from . import rewrite
from .shapes import replaced_input
from .vocabulary import LEARNED_TYPES, is_data, our_layer

COLOURS = {"DropIn": "#f4a340", "Resize": "#c39bd3", "data": "#d5d8dc", "weights": "#aed6f1", "other": "#ffffff"}
EDGE = "#444444"
SKIP = "#8c8c8c"  # neutral: the highlight colours belong to DropIn and Resize alone
INSTALL_GRAPHVIZ = "apt-get install graphviz"


def kind(layer):
    """'DropIn', 'Resize', 'data', 'weights' or 'other': what colour a layer is drawn in."""
    ours = our_layer(layer)
    if ours:
        return ours
    if is_data(layer):
        return "data"
    return "weights" if layer.get("type") in LEARNED_TYPES else "other"


def graph(net, shapes=None):
    """(boxes, edges): boxes are [label, kind] per non-in-place layer; edges (from, to, blob). An
    Input drawn at other `shapes` than it declares (--input-shape) says what it declares."""
    boxes, edges, producer = [], [], {}
    for layer in rewrite.layers(net):
        bottoms, tops = layer.get_all("bottom"), layer.get_all("top")
        if tops and bottoms == tops and tops[0] in producer:  # in place: fold into the producer's box
            boxes[producer[tops[0]]][0] += "\n+ %s (%s)" % (layer.get("name"), layer.get("type"))
            continue
        index = len(boxes)
        boxes.append(["%s (%s)" % (layer.get("name"), our_layer(layer) or layer.get("type")), kind(layer)])
        declared = replaced_input(layer, shapes or {})
        if declared:
            boxes[-1][0] += "\ndeclares %s; drawn at --input-shape" % ", ".join("x".join(map(str, shape))
                                                                             for shape in declared)
        edges += [(producer[b], index, b) for b in bottoms if b in producer]
        for top in tops:
            producer[top] = index
    return boxes, edges


def layout(boxes, edges):
    """(x, rank) per box: rank = longest path from a source; x spreads each rank's boxes."""
    rank = [0] * len(boxes)
    for source, target, _ in sorted(edges, key=lambda e: e[1]):
        rank[target] = max(rank[target], rank[source] + 1)
    per_rank = {}
    for index, r in enumerate(rank):
        per_rank.setdefault(r, []).append(index)
    x = [0.0] * len(boxes)
    for members in per_rank.values():
        for position, index in enumerate(members):
            x[index] = position - (len(members) - 1) / 2
    return x, rank


def draw_net(ax, net, shapes=None, title=None):
    """Draw `net` (one phase) on `ax`; `shapes` maps blob names to shapes for the edge labels."""
    from matplotlib.patches import FancyArrowPatch  # here: dot's drawing needs no matplotlib
    from matplotlib.path import Path

    boxes, edges = graph(net, shapes)
    x, rank = layout(boxes, edges)
    shapes = shapes or {}
    for source, target, blob in edges:
        start, end = (x[source] * 3, -rank[source]), (x[target] * 3, -rank[target])
        shape = shapes.get(blob)
        label = "x".join(map(str, shape)) if shape else "?"
        if rank[target] - rank[source] > 1:  # a skip (DropIn's prev, a residual): bend it around the boxes
            bend = 1.2 + 0.15 * (rank[target] - rank[source])
            corner = ((start[0] + end[0]) / 2 + bend, (start[1] + end[1]) / 2)
            points = [(start[0] + 0.9, start[1]), corner, (end[0] + 0.9, end[1] + 0.05)]
            ax.add_patch(FancyArrowPatch(path=Path(points, [Path.MOVETO, Path.CURVE3, Path.CURVE3]),
                                         arrowstyle="->", mutation_scale=9, color=SKIP, linewidth=1))
            ax.text(corner[0] / 2 + (start[0] + end[0]) / 4 + 0.46, corner[1], label, fontsize=6.5, color=SKIP,
                    va="center")
        else:
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle="->", color="#555555", shrinkA=12, shrinkB=12))
            ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, label, fontsize=6.5,
                    color="#333333", va="center")
    for (label, box_kind), bx, r in zip(boxes, x, rank):
        ax.text(bx * 3, -r, label, ha="center", va="center", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.35", facecolor=COLOURS[box_kind], edgecolor="#444444"))
    ax.set_xlim(min(x) * 3 - 2.2, max(x) * 3 + 3.2)
    ax.set_ylim(-max(rank) - 0.7, 0.7)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def figure_size(net):
    """A (width, height) in inches that fits the drawing of `net`."""
    boxes, edges = graph(net)
    x, rank = layout(boxes, edges)
    return max(6.0, 2.2 * (max(x) - min(x) + 2)), max(3.0, 0.62 * (max(rank) + 1))


def dot_path():
    """The path of Graphviz's `dot`, or None when it is not installed."""
    return shutil.which("dot")


def _quote(text):
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot_source(net, shapes=None, title=None):
    """DOT text drawing `net` (one phase) top to bottom; `shapes` maps blob names to shapes."""
    boxes, edges = graph(net, shapes)
    _, rank = layout(boxes, edges)
    shapes = shapes or {}
    fan_out = {}
    for source, _, _ in edges:
        fan_out[source] = fan_out.get(source, 0) + 1
    lines = ["digraph net {",
             "  graph [rankdir=TB, nodesep=0.3, ranksep=0.35, fontname=Helvetica, fontsize=14%s];"
             % (", labelloc=t, label=%s" % _quote(title) if title else ""),
             '  node [shape=box, style=filled, fontname=Helvetica, fontsize=10, color="#444444", margin="0.12,0.05"];',
             "  edge [fontname=Helvetica, fontsize=8, arrowsize=0.6];"]
    for index, (label, box_kind) in enumerate(boxes):
        lines.append('  n%d [label=%s, fillcolor="%s"];' % (index, _quote(label), COLOURS[box_kind]))
    for source, target, blob in edges:
        shape = shapes.get(blob)
        label = "x".join(map(str, shape)) if shape else "?"
        skip, branch = rank[target] - rank[source] > 1, fan_out[source] > 1
        colour = SKIP if skip or branch else EDGE
        style = ', color="%s", fontcolor="%s"%s' % (colour, colour, ", style=dashed" if skip else "")
        lines.append("  n%d -> n%d [label=%s%s];" % (source, target, _quote(" %s " % label), style))
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text, path):
    """Run dot on `dot_text`, writing `path` as PNG or SVG (by its extension); ConfigError if dot
    is missing or fails."""
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in ("png", "svg"):
        raise ConfigError("a drawing must be a .png or .svg file, got %s" % path)
    dot = dot_path()
    if dot is None:
        raise ConfigError("drawing needs Graphviz's dot: %s" % INSTALL_GRAPHVIZ)
    done = subprocess.run([dot, "-T" + extension, "-o", path], input=dot_text.encode("utf-8"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError("dot failed (exit %d) drawing %s: %s"
                          % (done.returncode, path, message[-1] if message else "no message"))
