"""Per-shape caches are bounded (lnbwd_iree.recent): a workload whose M keeps
changing keeps the state of its SHAPES_KEPT most recent shapes, not of all."""

import numpy as np
import pytest

from lnbwd_iree.recent import SHAPES_KEPT, RecentlyUsed
from lnbwd_iree.reference import backward_reference, forward_reference, relative_error
from lnbwd_iree.runtime import LayerNormKernels

SHAPES_TRIED = SHAPES_KEPT + 10


def test_recently_used_keeps_the_most_recent_and_releases_the_oldest():
    recent = RecentlyUsed(3)
    for key in "abc":
        recent.put(key, key.upper())
    assert recent.get("a") == "A"  # now the most recent: "b" is the oldest
    recent.put("d", "D")
    assert recent.get("b") is None and [k for k, _ in recent.items()] == ["c", "a", "d"]
    recent.put("c", "C2")  # a put refreshes too
    recent.put("e", "E")
    assert [k for k, _ in recent.items()] == ["d", "c", "e"] and len(recent) == 3
    recent.clear()
    assert len(recent) == 0
    with pytest.raises(ValueError, match="at least 1"):
        RecentlyUsed(0)


def test_kernels_keep_per_shape_state_for_a_bounded_number_of_shapes(cache_dir, rng):
    kernels = LayerNormKernels("local-task", backend="vmvx", cache_dir=cache_dir, static_shapes=False)
    n = 16
    gamma, beta = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    gamma_d, beta_d = kernels.to_device(gamma), kernels.to_device(beta)  # plans are kept for device arrays
    for m in range(1, SHAPES_TRIED + 1):
        x = kernels.to_device(rng.standard_normal((m, n)).astype(np.float32))
        dy = kernels.to_device(rng.standard_normal((m, n)).astype(np.float32))
        y, mean, rstd = kernels.forward(x, gamma_d, beta_d)
        grads = kernels.backward(dy, x, gamma_d, mean, rstd)
        want_y = forward_reference(x.to_host(), gamma, beta)[0]
        want_grads = backward_reference(dy.to_host(), x.to_host(), gamma, mean.to_host(), rstd.to_host())
        assert relative_error(y.to_host(), want_y) < 1e-5
        assert all(relative_error(g.to_host(), w) < 1e-5 for g, w in zip(grads, want_grads))
    assert len(kernels._plans) == len(kernels._specs) == SHAPES_KEPT
    assert len(kernels._modules) == 2  # the dynamic forward and backward serve every shape
    for _, entries in kernels._modules.items():
        assert all(len(entry.transients) <= SHAPES_KEPT for entry in entries.values())
    kernels.close()


def test_torch_calls_at_ever_new_m_keep_a_bounded_state():
    torch = pytest.importorskip("torch")
    import lnbwd_iree.torch as ours

    module, reference = ours.LayerNorm(24), torch.nn.LayerNorm(24)
    with torch.no_grad():
        for m in range(1, SHAPES_TRIED + 1):
            x = torch.randn(m, 24)
            torch.testing.assert_close(module(x), reference(x))
    kernels = ours.binding_for(torch.device("cpu")).kernels
    assert len(kernels._plans) <= SHAPES_KEPT and len(kernels._specs) <= SHAPES_KEPT
