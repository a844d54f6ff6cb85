"""The pure numpy math: schedule, masks, selects, blends and resizing (no Caffe involved)."""
import numpy as np
import pytest

from dropin_caffe import kernels


def test_schedule_grows_linearly_from_start_and_saturates():
    assert [kernels.schedule_p_new(t, 4) for t in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert kernels.schedule_p_new(10, 4, start=10) == 0
    assert kernels.schedule_p_new(5, 4, start=10) == 0
    assert kernels.schedule_p_new(13, 4, start=10) == 0.75


@pytest.mark.parametrize("p_new", [0.002, 0.1, 0.25, 0.5, 0.5 + 0.3 / 256, 0.77, 0.999])
def test_mask_fraction_within_four_standard_errors(p_new):
    mask = kernels.sample_mask(np.random.default_rng(7), p_new, (200, 1000))
    assert set(np.unique(mask)) <= {0, -1}
    standard_error = np.sqrt(p_new * (1 - p_new) / mask.size)
    assert abs(np.mean(mask != 0) - p_new) < 4 * standard_error


def test_mask_extremes_are_exact():
    rng = np.random.default_rng(0)
    assert not kernels.sample_mask(rng, 0.0, (64, 50)).any()
    assert (kernels.sample_mask(rng, 1.0, (64, 50)) == -1).all()


def test_mask_is_reproducible_from_the_seed_and_fresh_each_draw():
    first, second = np.random.default_rng(3), np.random.default_rng(3)
    a = kernels.sample_mask(first, 0.5, (7, 9, 5))
    assert np.array_equal(a, kernels.sample_mask(second, 0.5, (7, 9, 5)))
    assert not np.array_equal(a, kernels.sample_mask(first, 0.5, (7, 9, 5)))


def test_mask_draws_new_units_independently_of_position():
    masks = np.stack([kernels.sample_mask(np.random.default_rng(s), 0.3, (4, 5)) != 0 for s in range(4000)])
    per_unit = masks.mean(axis=0)  # each unit's frequency is near 0.3 (no unit is favoured)
    assert np.all(np.abs(per_unit - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 4000))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_is_bit_exact(dtype):
    rng = np.random.default_rng(1)
    prev = rng.standard_normal((3, 4, 5)).astype(dtype)
    new = rng.standard_normal((3, 4, 5)).astype(dtype)
    prev.flat[:3] = [np.nan, -0.0, np.inf]
    new.flat[3:6] = [np.nan, -0.0, -np.inf]
    mask = kernels.sample_mask(rng, 0.5, prev.shape)
    out = kernels.dropin_forward(prev, new, mask)
    expected = np.where(mask != 0, new, prev)
    assert out.dtype == dtype
    assert np.array_equal(out.view(np.uint8), expected.view(np.uint8))


def _numeric_grad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + eps
        up = f()
        x.flat[i] = old - eps
        down = f()
        x.flat[i] = old
        grad.flat[i] = (up - down) / (2 * eps)
    return grad


def test_select_gradient_matches_finite_differences_with_the_mask_held_fixed():
    rng = np.random.default_rng(2)
    prev, new, weights = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    mask = kernels.sample_mask(rng, 0.4, prev.shape)
    loss = lambda: np.sum(weights * kernels.dropin_forward(prev, new, mask))  # noqa: E731
    d_prev, d_new = kernels.dropin_backward(weights, mask, np.empty_like(prev), np.empty_like(new))
    np.testing.assert_allclose(d_prev, _numeric_grad(loss, prev), atol=1e-8)
    np.testing.assert_allclose(d_new, _numeric_grad(loss, new), atol=1e-8)


def test_backward_fills_only_what_is_asked():
    top = np.arange(6, dtype=np.float32).reshape(2, 3)
    mask = np.array([[-1, 0, -1], [0, 0, -1]], np.int32)
    d_prev, d_new = kernels.dropin_backward(top, mask, np.empty_like(top), None)
    assert d_new is None
    assert d_prev.tolist() == [[0, 1, 0], [3, 4, 0]]
    _, d_new = kernels.dropin_backward(top, mask, None, np.empty_like(top))
    assert d_new.tolist() == [[0, 0, 2], [0, 0, 5]]


def test_blend_is_the_expectation_and_exact_at_the_ends():
    prev, new = np.float32([1.0, 2.0, 3.0]), np.float32([0.1, 0.7, 1e-8])
    np.testing.assert_allclose(kernels.blend_forward(prev, new, 0.25), 0.25 * new + 0.75 * prev, rtol=1e-6)
    assert np.array_equal(kernels.blend_forward(prev, new, 1.0), new)
    assert np.array_equal(kernels.blend_forward(prev, new, 0.0), prev)
    d_prev, d_new = kernels.blend_backward(np.float32([1, 2, 4]), 0.25, np.empty(3, np.float32),
                                           np.empty(3, np.float32))
    assert d_prev.tolist() == [0.75, 1.5, 3.0] and d_new.tolist() == [0.25, 0.5, 1.0]
    d_prev, d_new = kernels.blend_backward(np.float32([1, 2, 4]), 1.0, np.ones(3, np.float32), np.ones(3, np.float32))
    assert d_prev.tolist() == [0, 0, 0] and d_new.tolist() == [1, 2, 4]


def test_bilinear_matrix_by_hand():
    # 2 -> 4, half-pixel centres: outputs sample x = -0.25, 0.25, 0.75, 1.25 (ends clamped).
    expected = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    np.testing.assert_allclose(kernels.interp_matrix(2, 4), expected)
    # 4 -> 2: outputs sample x = 0.5 and 2.5, the mean of each pair.
    np.testing.assert_allclose(kernels.interp_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_array_equal(kernels.interp_matrix(5, 5), np.eye(5))


def test_nearest_matrix_by_hand():
    np.testing.assert_array_equal(kernels.interp_matrix(2, 4, "nearest"), [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(kernels.interp_matrix(5, 2, "nearest"), [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]])


@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
@pytest.mark.parametrize("shape_in,shape_out", [
    ((2, 3, 5, 7), (2, 3, 10, 7)),   # up in H only
    ((2, 3, 5, 7), (2, 3, 5, 3)),    # down in W only
    ((1, 4, 6, 6), (1, 4, 3, 11)),   # down H, up W
    ((2, 3, 5, 5), (2, 6, 5, 5)),    # channel pad
    ((2, 6, 4, 4), (2, 2, 9, 9)),    # channel truncate and up
    ((3, 8), (3, 5)),                # fc blob, truncate
    ((3, 5), (3, 8)),                # fc blob, pad
])
def test_resize_backward_is_the_exact_adjoint(interp, shape_in, shape_out):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal(shape_in), rng.standard_normal(shape_out)
    forward = kernels.resize_forward(x, shape_out, interp)
    assert forward.shape == shape_out
    adjoint = kernels.resize_backward(y, shape_in, interp)
    assert adjoint.shape == shape_in
    np.testing.assert_allclose(np.sum(forward * y), np.sum(x * adjoint), rtol=1e-12)


def test_resize_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    x, weights = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 3, 5, 2))
    loss = lambda: np.sum(weights * kernels.resize_forward(x, weights.shape))  # noqa: E731
    np.testing.assert_allclose(kernels.resize_backward(weights, x.shape), _numeric_grad(loss, x), atol=1e-8)


def test_resize_keeps_values_pads_zeros_and_upsamples_constants_exactly():
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    same = kernels.resize_forward(x, (2, 3, 3, 3))
    assert np.array_equal(same[:, :2], x) and not same[:, 2].any()
    constant = kernels.resize_forward(np.full((1, 1, 3, 5), 2.5, np.float32), (1, 1, 7, 4))
    np.testing.assert_allclose(constant, 2.5, rtol=1e-6)
    assert kernels.resize_forward(x, (2, 2, 3, 3)).dtype == np.float32


def reference_mask(rng, p_new, size):
    """sample_mask written plainly: one byte per unit from the stream (an SFC64 seeded by one draw
    of `rng` from 2**19 units), b < floor(256 p) from new, ties b == k settled by rng.random."""
    source = np.random.SFC64(int(rng.bit_generator.random_raw())) if size >= (1 << 19) else rng.bit_generator
    chunk = 1 << 17
    rows = [size] if size <= chunk else None
    # The kernel draws its bytes slice by slice (whole 8-byte words per slice); in one dimension
    # a slice is `chunk` units.
    rows = rows or [min(chunk, size - start) for start in range(0, size, chunk)]
    raw = np.concatenate([source.random_raw(-(-n // 8)).view(np.uint8)[:n] for n in rows])
    scaled = 256.0 * p_new
    k = int(scaled)
    mask = np.where(raw < k, -1, 0).astype(np.int32)
    ties = np.flatnonzero(raw == k) if k != scaled else np.array([], int)
    if len(ties):
        mask[ties] = -(rng.random(len(ties)) < scaled - k).astype(np.int32)
    return mask


@pytest.mark.parametrize("size", [1000, (1 << 17) + 5, 3 * (1 << 17) + 11, (1 << 19) + 3])
@pytest.mark.parametrize("p_new", [0.3, 0.5 + 0.4 / 256])
def test_mask_chunked_and_seeded_paths_match_a_plain_reference(size, p_new):
    """Blobs over 2**17 units are drawn in slices, from 2**19 units by a seeded SFC64: both must give
    exactly the mask a plain one-pass reference gives from the same generator state."""
    got = kernels.sample_mask(np.random.default_rng(11), p_new, (size,))
    assert np.array_equal(got, reference_mask(np.random.default_rng(11), p_new, size))


@pytest.mark.parametrize("shape", [(3, 5), (2, (1 << 17) + 7), (5, 1 << 17)])
def test_chunked_select_and_backward_match_numpy_where(shape):
    rng = np.random.default_rng(2)
    prev, new, top_diff = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    mask = kernels.sample_mask(rng, 0.4, shape)
    chosen = mask != 0
    assert np.array_equal(kernels.dropin_forward(prev, new, mask), np.where(chosen, new, prev))
    prev_diff, new_diff = kernels.dropin_backward(top_diff, mask, np.empty_like(prev), np.empty_like(new))
    assert np.array_equal(new_diff, np.where(chosen, top_diff, 0))
    assert np.array_equal(prev_diff, np.where(chosen, 0, top_diff))
