"""The math of DropIn and Resize as pure numpy functions; nothing here knows Caffe.

DropIn (Smith, Hand & Doster 2015, "Gradual DropIn of Layers to Train Very Deep Neural
Networks") joins two blobs of one shape: each unit of the output comes from `new` with
probability `p_new`, else from `prev`. Gradual DropIn grows `p_new` linearly from 0 to 1 over
L iterations (`schedule_p_new`).

A sampled mask is an integer array of the blob's shape holding -1 (every bit set) where the unit
comes from `new` and 0 where it comes from `prev`; `mask != 0` is its boolean reading. Selecting
with bit operations on that mask is exact (a unit is a bit-for-bit copy of its source, NaN and
-0.0 included) and needs no float arithmetic, which makes it the fastest exact select numpy has.

Resize is linear: each spatial axis is multiplied by an interpolation matrix (`interp_matrix`),
so its backward pass, multiplication by the transposed matrices, is its exact adjoint.
"""
import functools
import math

import numpy as np

_BITS = {4: np.int32, 8: np.int64}


def schedule_p_new(iteration, length, start=0):
    """p(t) = min(1, max(0, (t - start) / length)): the probability a unit comes from `new`."""
    return min(1.0, max(0.0, (iteration - start) / length))


# A DropIn layer's counter (its TRAIN forward passes) lives in its parameter blob as two float32
# values, (count % 2**22, count // 2**22): both stay whole numbers far past 2**24 passes, where
# one float32 would stop counting. The native layers use the same encoding.
COUNTER_LOW = 2 ** 22


def encode_count(count):
    """The counter blob's two values for `count` forward passes."""
    return (count % COUNTER_LOW, count // COUNTER_LOW)


def decode_count(values):
    """The count a counter blob's values hold, or None when they are not two whole numbers in range
    (a solver without `lr_mult: 0 decay_mult: 0` has changed them, or the blob is another's)."""
    values = [float(v) for v in values]
    if len(values) != 2:
        return None
    low, high = values
    if not (low.is_integer() and high.is_integer() and 0 <= low < COUNTER_LOW and high >= 0):
        return None
    return int(high) * COUNTER_LOW + int(low)


def p_new_at(config, count):
    """The p of a DropIn layer with `config` (its parsed param_str) after `count` TRAIN forward
    passes: the schedule at iteration count // iter_size, or regularize's fixed p_new."""
    if config["mode"] == "regularize":
        return float(config["p_new"])
    return schedule_p_new(count // config["iter_size"], config["length"], config.get("start", 0))


def test_p_new(config, p_new):
    """The p a DropIn layer uses in TEST when its TRAIN p is `p_new`: the expectation (p_new itself),
    or 1 ("test": "new") or 0 ("test": "prev")."""
    return {"expectation": p_new, "new": 1.0, "prev": 0.0}[config["test"]]


def sample_mask(rng, p_new, shape, out=None):
    """Draw a Bernoulli(`p_new`) select mask (-1 = from `new`, 0 = from `prev`) of `shape`.

    Exact for any 0 <= p_new <= 1 while drawing one random byte per unit: with a byte b and a
    uniform v, U = (b + v) / 256 is uniform on [0, 1), and U < p_new holds exactly when
    b < k = floor(256 p_new), or b == k and v < 256 p_new - k. So v is drawn only for the ties,
    about one unit in 256, and never when 256 p_new is whole (v < 0 cannot hold).
    Only `rng` is used: its bit generator gives the bytes (in C order of the units; for large
    blobs one draw seeds a faster stream of them), the ties' v come after, so a Generator in the
    same state gives the same mask.
    """
    if out is None:
        out = np.empty(shape, np.int32)
    scaled = 256.0 * p_new
    k = int(scaled)
    # From 2**19 units the bytes come from an SFC64 seeded by one draw of `rng`: numpy makes its
    # raw output 1.6x faster than default_rng's PCG64 (3.3M units: 0.61 vs 0.99 ms, the mask
    # 1.8 -> 1.4 ms); below that, its 10 us set-up costs more than it saves.
    source = rng.bit_generator
    if out.size >= _SEEDED_SOURCE:
        source = np.random.SFC64(int(source.random_raw()))
    ties, offset = [], 0
    for index in _slices(out.shape):
        part = out[index]
        raw = source.random_raw(-(-part.size // 8)).view(np.uint8)[:part.size].reshape(part.shape)
        # b < k as 0/1 bytes, negated to 0/-1 while still one byte wide, then sign-extended into
        # the mask: the cheapest exact path numpy has from bytes to an int32 mask.
        below = np.empty(part.shape, np.int8)
        np.less(raw, k, out=below.view(np.bool_))
        np.negative(below, out=below)
        np.copyto(part, below)
        if k != scaled:
            ties.append(offset + np.flatnonzero(raw == k))
        offset += part.size
    ties = np.concatenate(ties) if ties else ()
    if len(ties):
        out.flat[ties] = -(rng.random(len(ties)) < scaled - k).astype(out.dtype)
    return out


# Blobs are processed in slices of about _CHUNK units along axis 0, so the intermediates of the
# multi-pass selects stay in the core's 2 MB L2 cache instead of going through memory once per
# pass (the int32 mask alone is 4 bytes a unit). Measured on 100x32x32x32 with numpy 1.19:
# mask + forward + backward 11.7 -> 8.4 ms; smaller slices lose to Python's per-call overhead.
_CHUNK = 1 << 17
_SEEDED_SOURCE = 1 << 19


def _slices(shape):
    """Indexes that cover an array of `shape` in C order, about _CHUNK units each."""
    size = math.prod(shape)
    if size <= _CHUNK:
        return [Ellipsis]
    rows = max(1, _CHUNK * shape[0] // size)
    return [slice(start, start + rows) for start in range(0, shape[0], rows)]


def _bits(array):
    return array.view(_BITS[array.dtype.itemsize])


def _mask_bits(mask, like):
    bits = _BITS[like.dtype.itemsize]
    return mask if mask.dtype == bits else mask.astype(bits)


def dropin_forward(prev, new, mask, out=None):
    """Unit-wise select: `new` where the mask is set, `prev` elsewhere (bit-exact)."""
    if out is None:
        out = np.empty_like(prev)
    out_bits, prev_bits, new_bits = _bits(out), _bits(prev), _bits(new)
    for index in _slices(prev.shape):
        part, prev_part = out_bits[index], prev_bits[index]
        np.bitwise_xor(prev_part, new_bits[index], out=part)
        np.bitwise_and(part, _mask_bits(mask[index], prev), out=part)
        np.bitwise_xor(part, prev_part, out=part)
    return out


def dropin_backward(top_diff, mask, prev_diff=None, new_diff=None):
    """Route each unit's gradient to the input it came from; either output may be None (skipped).

    Returns (prev_diff, new_diff).
    """
    top_bits = _bits(top_diff)
    for index in _slices(top_diff.shape):
        top, mask_part = top_bits[index], _mask_bits(mask[index], top_diff)
        if new_diff is not None:
            np.bitwise_and(top, mask_part, out=_bits(new_diff[index]))
        if prev_diff is not None:
            if new_diff is not None:  # top & ~mask == top ^ (top & mask), one pass fewer
                np.bitwise_xor(top, _bits(new_diff[index]), out=_bits(prev_diff[index]))
            else:
                np.bitwise_and(top, np.invert(mask_part), out=_bits(prev_diff[index]))
    return prev_diff, new_diff


def blend_forward(prev, new, p_new, out=None):
    """p_new * new + (1 - p_new) * prev: DropIn's expectation. p_new 0 or 1 copies exactly."""
    if out is None:
        out = np.empty_like(prev)
    if p_new == 0.0:
        np.copyto(out, prev)
    elif p_new == 1.0:
        np.copyto(out, new)
    else:
        np.multiply(new, p_new, out=out)
        out += (1.0 - p_new) * prev
    return out


def blend_backward(top_diff, p_new, prev_diff=None, new_diff=None):
    """Adjoint of `blend_forward`; either output may be None (skipped). Returns both."""
    for diff, weight in ((prev_diff, 1.0 - p_new), (new_diff, p_new)):
        if diff is None:
            continue
        if weight == 1.0:
            np.copyto(diff, top_diff)
        elif weight == 0.0:
            diff.fill(0)
        else:
            np.multiply(top_diff, weight, out=diff)
    return prev_diff, new_diff


@functools.lru_cache(maxsize=64)
def interp_matrix(size_in, size_out, interp="bilinear", dtype="float64"):
    """The (size_out, size_in) matrix that resamples one axis, with half-pixel centres; cached
    per dtype, so a layer's every pass reuses the one built for its blobs.

    Output index i samples the input at x = (i + 0.5) * size_in / size_out - 0.5. "bilinear" mixes
    the two nearest inputs (clamped at the borders, so every row sums to 1); "nearest" takes
    input floor((i + 0.5) * size_in / size_out). Equal sizes give the identity.
    """
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    centres = (rows + 0.5) * size_in / size_out
    if interp == "nearest":
        matrix[rows, np.minimum(np.floor(centres).astype(int), size_in - 1)] = 1.0
    else:
        x = np.clip(centres - 0.5, 0, size_in - 1)
        left = np.floor(x).astype(int)
        right = np.minimum(left + 1, size_in - 1)
        frac = x - left
        np.add.at(matrix, (rows, left), 1.0 - frac)
        np.add.at(matrix, (rows, right), frac)
    matrix = matrix.astype(dtype)
    matrix.setflags(write=False)
    return matrix


def _resample(x, a_h, a_w):
    """Apply a_h to axis 2 and a_w to axis 3 of x (N, C, H, W) as two large matrix products."""
    n, c, h, w = x.shape
    if a_w is not None:
        x = (x.reshape(-1, w) @ a_w.T).reshape(n, c, h, -1)
        w = x.shape[3]
    if a_h is not None:
        cols = x.transpose(2, 0, 1, 3).reshape(h, -1)
        x = (a_h @ cols).reshape(-1, n, c, w).transpose(1, 2, 0, 3)
    return x


def _matrices(shape_in, shape_out, interp, dtype, adjoint=False):
    """The interpolation matrices for H and W (None where the size is kept)."""
    found = []
    for size_in, size_out in zip(shape_in[2:], shape_out[2:]):
        if size_in == size_out:
            found.append(None)
        else:
            matrix = interp_matrix(size_in, size_out, interp, np.dtype(dtype).name)
            found.append(matrix.T if adjoint else matrix)
    return found + [None] * (2 - len(found))


def resize_forward(x, shape, interp="bilinear", out=None):
    """Resize x, (N, C) or (N, C, H, W), to `shape` (same N and ndim).

    Extra channels are zeros; surplus channels are dropped; H and W are resampled by `interp`.
    """
    if out is None:
        out = np.empty(shape, x.dtype)
    channels = min(x.shape[1], shape[1])
    a_h, a_w = _matrices(x.shape, shape, interp, x.dtype)
    out[:, :channels] = _resample(x[:, :channels], a_h, a_w) if x.ndim == 4 else x[:, :channels]
    out[:, channels:] = 0
    return out


def resize_backward(top_diff, shape, interp="bilinear", out=None):
    """The exact adjoint of `resize_forward`: the gradient w.r.t. an input of `shape`."""
    if out is None:
        out = np.empty(shape, top_diff.dtype)
    channels = min(top_diff.shape[1], shape[1])
    a_h, a_w = _matrices(shape, top_diff.shape, interp, top_diff.dtype, adjoint=True)
    kept = top_diff[:, :channels]
    out[:, :channels] = _resample(kept, a_h, a_w) if top_diff.ndim == 4 else kept
    out[:, channels:] = 0
    return out
