"""The float64 reference against finite differences, and why CK's README formula is wrong."""

import numpy as np

from lnbwd_iree.reference import backward_reference, forward_reference, relative_error


def loss(dy, x, gamma, beta, eps):
    """sum(Y * dY): its gradient w.r.t. (x, gamma, beta) is the backward of dY."""
    return float((forward_reference(x, gamma, beta, eps)[0] * dy).sum())


def central_difference(f, array, h=1e-6):
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + h
        up = f()
        array[index] = saved - h
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * h)
    return grad


def test_reference_backward_matches_finite_differences(rng):
    m, n, eps = 5, 7, 1e-5
    dy, x = rng.standard_normal((m, n)), rng.standard_normal((m, n)) * 3 + 1
    gamma, beta = rng.standard_normal(n), rng.standard_normal(n)
    _, mean, rstd = forward_reference(x, gamma, beta, eps)
    dx, dgamma, dbeta = backward_reference(dy, x, gamma, mean, rstd)

    f = lambda: loss(dy, x, gamma, beta, eps)  # noqa: E731
    assert relative_error(dx, central_difference(f, x)) < 1e-7
    assert relative_error(dgamma, central_difference(f, gamma)) < 1e-7
    assert relative_error(dbeta, central_difference(f, beta)) < 1e-7


def test_ck_readme_formula_disagrees_with_finite_differences(rng):
    """CK example 53's README puts the column sums dbeta_j, dgamma_j in dX;
    the finite differences show that is a different (wrong) function."""
    m, n, eps = 4, 6, 1e-5
    dy, x = rng.standard_normal((m, n)), rng.standard_normal((m, n))
    gamma, beta = rng.standard_normal(n), rng.standard_normal(n)
    _, mean, rstd = forward_reference(x, gamma, beta, eps)
    _, dgamma, dbeta = backward_reference(dy, x, gamma, mean, rstd)
    x_hat = (x - mean[:, None]) * rstd[:, None]
    ck_dx = gamma * rstd[:, None] * (dy - (dbeta + x_hat * dgamma) / n)

    numeric = central_difference(lambda: loss(dy, x, gamma, beta, eps), x)
    assert relative_error(ck_dx, numeric) > 0.05


def test_reference_3d_equals_flattened(rng):
    dy, x = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 3, 8))
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    _, mean, rstd = forward_reference(x, gamma, beta)
    for got, flat in zip(
        backward_reference(dy, x, gamma, mean, rstd),
        backward_reference(dy.reshape(6, 8), x.reshape(6, 8), gamma, mean.ravel(), rstd.ravel()),
    ):
        np.testing.assert_allclose(got.reshape(flat.shape), flat, rtol=1e-12, atol=0)
