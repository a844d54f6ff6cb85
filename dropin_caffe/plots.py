"""Plots drawn on an Axes the caller gives (the CLIs save files; tests use the Agg backend)."""
import numpy as np

from . import kernels


def plot_schedule(ax, length, starts=(0,), iterations=None, measured_units=0, seed=0):
    """Draw p(t) of gradual DropIn layers that start entering at `starts`, each over `length`.

    With `measured_units`, also mark at a few iterations the fraction of units that a real
    `sample_mask` draw took from `new` (the schedule as the layer actually applies it).
    """
    iterations = iterations or max(starts) + int(1.25 * length)
    t = np.arange(iterations + 1)
    rng = np.random.default_rng(seed)
    for start in starts:
        p = [kernels.schedule_p_new(i, length, start) for i in t]
        line, = ax.plot(t, p, label="DropIn layer entering at %d" % start if len(starts) > 1 else "p(t)")
        if measured_units:
            at = np.linspace(0, iterations, 17).astype(int)
            drawn = [np.mean(kernels.sample_mask(rng, kernels.schedule_p_new(i, length, start),
                                                 (measured_units,)) != 0) for i in at]
            ax.plot(at, drawn, "o", color=line.get_color(), markersize=4)
    ax.set_xlabel("training iteration t")
    ax.set_ylabel("p(t) = P(unit from new)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return ax
