"""DropIn and Resize as Caffe Python layers (pycaffe's `caffe.Layer` interface).

Use them from any prototxt with Python-layer support; the math lives in `kernels`.

DropIn, gradual (Smith, Hand & Doster 2015): at training iteration t each unit of the top comes
from `new` with probability p(t) = min(1, max(0, (t - start) / length)), else from `prev`::

    layer {
      name: "dropin3" type: "Python"
      bottom: "conv3" bottom: "conv3_1" top: "dropin3" top: "dropin3_p"
      loss_weight: 0 loss_weight: 0
      param { lr_mult: 0 decay_mult: 0 }
      python_param { module: "dropin_caffe.layers" layer: "DropIn"
                     param_str: '{"name": "dropin3", "length": 1000}' }
    }

- bottoms: prev, new (identical shapes, any number of axes); tops: the joined blob, and
  optionally p of shape (1,) so Caffe's log carries the schedule (give it loss_weight 0).
- TRAIN: counts its forward passes in its parameter blob, so snapshots save the schedule,
  `--snapshot` resumes it and the TEST net (sharing the blob by layer name) follows it.
  0 < p < 1 draws a fresh Bernoulli(p) mask per unit; p = 0 copies prev, p = 1 copies new.
  Backward routes each unit's gradient to the input it came from.
- TRAIN with "train": "blend" (our addition, a deterministic fade-in as progressive GANs
  grow): outputs p new + (1 - p) prev, no mask; backward scales the gradient by p for new and
  1 - p for prev. The default, "select", is the per-unit choice above.
- TEST: "expectation" (default) outputs p new + (1 - p) prev, "new" and "prev" one input.
- Regularizing mode ({"mode": "regularize", "p_new": 0.5}) keeps p fixed, like dropout where a
  dropped unit takes prev instead of zero.

The TEST modes (the expectation by default), `start` and the stored counter are our choice, not
the paper's.

The counter is stored as two float32 whole numbers, count = high * 2**22 + low, so it stays
exact far past float32's 2**24. A solver that is allowed to change it (no `lr_mult: 0
decay_mult: 0`) makes it fractional through weight decay; the layer then stops and says so.

Under the `caffe train` command line, Caffe aborts on an exception from a Python layer without
printing it, so every error is written to stderr before it is raised.
"""
import math
import sys

import caffe
import numpy as np

from . import kernels, params
from .errors import ConfigError


def _fail(message):
    """Report and raise: the `caffe` command line would otherwise abort without a word."""
    sys.stderr.write("dropin_caffe: %s\n" % message)
    sys.stderr.flush()
    raise ConfigError(message)


class _Checked(caffe.Layer):
    """Shared plumbing: parse param_str into self.config and report errors loudly."""

    kind = None

    def _configure(self):
        try:
            self.config, self.label = params.layer_config(self.kind, self.param_str)
        except ConfigError as error:
            _fail(str(error))

    def _check_count(self, what, blobs, allowed):
        if len(blobs) not in allowed:
            _fail("%s: takes %s %s, got %d" % (self.label, " or ".join(map(str, allowed)), what, len(blobs)))


class DropIn(_Checked):
    """Join `prev` and `new` unit by unit (see the module docstring)."""

    kind = "DropIn"

    def setup(self, bottom, top):
        self._configure()
        config = self.config
        self._check_count("bottoms (prev, new)", bottom, (2,))
        self._check_count("tops (the output, and optionally p)", top, (1, 2))
        if len(self.blobs) == 0:
            self.blobs.add_blob(2)
            self.blobs[0].data[...] = 0
        elif self.blobs[0].count != 2:
            _fail("%s: its parameter blob must hold 2 values (the iteration counter), holds %d"
                  % (self.label, self.blobs[0].count))
        self.rng = np.random.default_rng(config["seed"])
        self.mask = None
        self.p_new = None

    def reshape(self, bottom, top):
        prev, new = bottom[0].data.shape, bottom[1].data.shape
        if prev != new:
            _fail("%s: bottoms prev and new must have the same shape, got %s and %s; insert a Resize "
                  "layer (python_param { module: \"dropin_caffe.layers\" layer: \"Resize\" }) to match them"
                  % (self.label, prev, new))
        top[0].reshape(*prev)
        if len(top) == 2:
            top[1].reshape(1)
        if self.mask is None or self.mask.shape != prev:
            self.mask = np.empty(prev, np.int32)

    @property
    def forward_count(self):
        """Forward passes in TRAIN so far, read afresh from the (possibly re-pointed) blob."""
        values = self.blobs[0].data.ravel().tolist()
        count = kernels.decode_count(values)
        if count is None:
            _fail("%s: its iteration counter (parameter blob) holds %r, %r, which are not whole numbers: "
                  "the solver has changed it; add param { lr_mult: 0 decay_mult: 0 } to the layer"
                  % (self.label, *values))
        return count

    @forward_count.setter
    def forward_count(self, count):
        self.blobs[0].data[...] = kernels.encode_count(count)

    def p_new_at(self, count):
        """p after `count` TRAIN forward passes (regularize: the fixed p_new)."""
        return kernels.p_new_at(self.config, count)

    def forward(self, bottom, top):
        count = self.forward_count  # read (and checked) once per pass
        p_new = self.p_new_at(count)
        if self.phase == caffe.TRAIN:
            self.forward_count = count + 1
            selects = self.config["train"] == "select" and 0.0 < p_new < 1.0
            self.p_new = None if selects else p_new  # None: a mask was drawn
        else:
            self.p_new = kernels.test_p_new(self.config, p_new)
        prev, new = bottom[0].data, bottom[1].data
        if self.p_new is None:
            kernels.sample_mask(self.rng, p_new, prev.shape, out=self.mask)
            kernels.dropin_forward(prev, new, self.mask, out=top[0].data)
        else:
            kernels.blend_forward(prev, new, self.p_new, out=top[0].data)
        if len(top) == 2:
            top[1].data[0] = p_new

    def backward(self, top, propagate_down, bottom):
        diffs = [bottom[i].diff if propagate_down[i] else None for i in range(len(bottom))]
        if self.p_new is None:
            kernels.dropin_backward(top[0].diff, self.mask, *diffs)
        else:
            kernels.blend_backward(top[0].diff, self.p_new, *diffs)


class Resize(_Checked):
    """Resize a blob to a target shape: channels padded with zeros or truncated, H and W resampled.

    - bottoms: the blob, (N, C) or (N, C, H, W); optionally a second blob whose C, H, W are the
      target (like Crop). Otherwise the target is `channels`, `height`, `width` in param_str,
      each optional (absent = keep). top: (N, C', H', W').
    - "interp": "bilinear" (default, half-pixel centres) or "nearest". Same in TRAIN and TEST;
      backward is the exact adjoint of forward. Example::

        layer { name: "resize1" type: "Python" bottom: "pool1" top: "pool1_resized"
                python_param { module: "dropin_caffe.layers" layer: "Resize"
                               param_str: '{"channels": 50, "height": 8, "width": 8}' } }
    """

    kind = "Resize"

    def setup(self, bottom, top):
        self._configure()
        self._check_count("bottoms (the blob, and optionally a blob of the target shape)", bottom, (1, 2))
        self._check_count("tops", top, (1,))
        given = [k for k in ("channels", "height", "width") if k in self.config]
        if len(bottom) == 2 and given:
            _fail("%s: the target comes from the second bottom, so param_str must not also give %s; "
                  "remove one of them" % (self.label, ", ".join(given)))

    def reshape(self, bottom, top):
        shape = bottom[0].data.shape
        if len(shape) not in (2, 4):
            _fail("%s: resizes (N, C) or (N, C, H, W) blobs, got shape %s" % (self.label, shape))
        if len(bottom) == 2:
            target = bottom[1].data.shape
            if len(target) != len(shape):
                _fail("%s: the second bottom must have as many axes as the first, got %s and %s"
                      % (self.label, target, shape))
            self.shape = shape[:1] + target[1:]
        else:
            if len(shape) == 2 and ("height" in self.config or "width" in self.config):
                _fail('%s: "height" and "width" need a 4-D bottom, got shape %s' % (self.label, shape))
            keys = ("channels", "height", "width")[: len(shape) - 1]
            self.shape = shape[:1] + tuple(self.config.get(k, size) for k, size in zip(keys, shape[1:]))
        count = math.prod(self.shape)
        if count > params.INT_MAX:  # Caffe's Blob::Reshape would CHECK-fail and abort the process
            _fail("%s: the top would have %d elements (shape %s), more than Caffe's limit INT_MAX = %d; give "
                  "smaller channels/height/width" % (self.label, count, self.shape, params.INT_MAX))
        top[0].reshape(*self.shape)

    def forward(self, bottom, top):
        kernels.resize_forward(bottom[0].data, self.shape, self.config["interp"], out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            kernels.resize_backward(top[0].diff, bottom[0].data.shape, self.config["interp"],
                                    out=bottom[0].diff)
        if len(bottom) == 2 and propagate_down[1]:
            bottom[1].diff[...] = 0
