"""Draw deep-collapse.png from docs/experiments/deep/results.csv (the `deep` experiment, issue 15):
the train loss of the four depth-100 runs, and how many of the 100 DropIn layers were fully in (p = 1).

  tools/caffe-env run python3 docs/pilots/deep_collapse.py
"""
import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
rows = list(csv.DictReader(open(os.path.join(HERE, "..", "experiments", "deep", "results.csv"))))
figure, (loss_ax, p_ax) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
for name in sorted({row["configuration"] for row in rows if row["configuration"].startswith("depth 100")}):
    mine = [row for row in rows if row["configuration"] == name]
    losses = [(int(row["iteration"]), float(row["train_loss"])) for row in mine if row["train_loss"]]
    loss_ax.plot(*zip(*losses), label=name)
    full = [(int(row["iteration"]), sum(float(v) >= 1 for k, v in row.items() if k.startswith("p/") and v))
            for row in mine if any(k.startswith("p/") and v for k, v in row.items())]
    if full:
        p_ax.plot(*zip(*full), label=name)
loss_ax.axhline(math.log(10), color="grey", linestyle=":", label="ln 10: uniform over 10 classes")
loss_ax.set_ylabel("train loss")
loss_ax.legend(fontsize=8)
p_ax.set_ylabel("DropIn layers at p = 1 (of 100)")
p_ax.set_xlabel("iteration")
figure.suptitle("deep (100 added layers, gaussian std 0.01): the loss settles at ln 10, it does not explode")
figure.tight_layout()
figure.savefig(os.path.join(HERE, "deep-collapse.png"), dpi=90)
