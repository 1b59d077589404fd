"""lnbwd_iree.torch on the meta device (deferred initialisation) and under torch.func transforms."""

import pytest

torch = pytest.importorskip("torch")

import lnbwd_iree.torch as ours  # noqa: E402

F = torch.nn.functional
B, M, N = 3, 5, 24


def inputs(*shape, seed=0, **kwargs):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("ours_class, torch_class", [(ours.LayerNorm, torch.nn.LayerNorm),
                                                     (ours.RMSNorm, torch.nn.RMSNorm)], ids=lambda c: c.__name__)
def test_meta_device_runs_the_fake_kernels_and_defers_initialisation(ours_class, torch_class):
    module = ours_class(N, device="meta")
    assert all(p.is_meta for p in module.parameters())
    x = torch.empty(B, M, N, device="meta", requires_grad=True)
    y = module(x)
    assert y.is_meta and y.shape == x.shape
    y.sum().backward()
    assert x.grad.is_meta and x.grad.shape == x.shape
    assert all(p.grad.is_meta and p.grad.shape == (N,) for p in module.parameters())
    # Deferred initialisation, as torch's modules take it: real memory, then the initial values.
    module.to_empty(device="cpu")
    module.reset_parameters()
    reference = torch_class(N)
    assert module.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), reference.state_dict().values()))
    data = inputs(B, M, N)
    torch.testing.assert_close(module(data), reference(data))


def count_kernel_calls(monkeypatch, name):
    calls = []
    kernel = getattr(ours, name)
    monkeypatch.setattr(ours, name, lambda *args: calls.append(1) or kernel(*args))
    return calls


@pytest.mark.parametrize("function, reference, kernel", [
    (ours.layer_norm, F.layer_norm, "_forward_kernel"),
    (ours.rms_norm, F.rms_norm, "_rms_norm_forward_kernel"),
], ids=["layer_norm", "rms_norm"])
@pytest.mark.parametrize("per_example_weight", [False, True], ids=["shared-weight", "per-example-weight"])
def test_vmap_is_one_kernel_call_that_matches_torch(function, reference, kernel, per_example_weight, monkeypatch):
    """torch.func.vmap through the custom op's vmap rule: the vmapped dim is
    one more batch dim of a single call (torch's fallback would call once per
    example), also with a weight per example (model ensembles)."""
    x, weight = inputs(B, M, N), inputs(B, N, seed=1) if per_example_weight else inputs(N, seed=1)
    in_dims = (0, 0 if per_example_weight else None)
    want = torch.func.vmap(lambda x, w: reference(x, (N,), w), in_dims=in_dims)(x, weight)
    calls = count_kernel_calls(monkeypatch, kernel)
    got = torch.func.vmap(lambda x, w: function(x, (N,), w), in_dims=in_dims)(x, weight)
    assert len(calls) == 1
    torch.testing.assert_close(got, want)


def test_vmap_of_a_module_over_a_non_leading_dim():
    x = inputs(M, B, N)
    torch.testing.assert_close(torch.func.vmap(ours.LayerNorm(N), in_dims=1, out_dims=1)(x), F.layer_norm(x, (N,)))


@pytest.mark.parametrize("op, statistics", [(ours.layer_norm_bwd, "mean-rstd"), (ours.rms_norm_bwd, "rstd")])
@pytest.mark.parametrize("weight_dim", [None, 0], ids=["shared-weight", "per-example-weight"])
def test_vmap_of_the_backward_ops_gives_each_examples_gradients(op, statistics, weight_dim, monkeypatch):
    x, dy = inputs(B, M, N), inputs(B, M, N, seed=2)
    weight = inputs(B, N, seed=1) if weight_dim == 0 else inputs(N, seed=1)
    if statistics == "mean-rstd":
        stats = ours.layer_norm_fwd(x, None, None, 1e-5)[1:]
    else:
        stats = ours.rms_norm_fwd(x, None, 1e-5)[1:]
    example = lambda i: (dy[i], x[i], weight[i] if weight_dim == 0 else weight, *(s[i] for s in stats))  # noqa: E731
    want = [torch.stack(per_example) for per_example in zip(*(op(*example(i)) for i in range(B)))]
    calls = count_kernel_calls(monkeypatch, "_backward_kernel" if statistics == "mean-rstd" else "_rms_norm_backward_kernel")
    got = torch.func.vmap(op, in_dims=(0, 0, weight_dim, *(0 for _ in stats)))(dy, x, weight, *stats)
    assert len(calls) == 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("module", [ours.LayerNorm(N), ours.RMSNorm(N)], ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("transform", [
    lambda f, x: torch.func.grad(lambda x: f(x).sum())(x),
    lambda f, x: torch.func.jacrev(f)(x[0, 0]),
    lambda f, x: torch.func.jvp(f, (x,), (x,)),
    lambda f, x: torch.func.jacfwd(f)(x[0, 0]),
    lambda f, x: torch.func.vmap(torch.func.grad(lambda x: f(x).sum()))(x),
], ids=["grad", "jacrev", "jvp", "jacfwd", "vmap-of-grad"])
def test_autodiff_transforms_are_refused_with_the_way_forward(module, transform):
    """torch 2.13's custom ops cannot take part in torch.func's autodiff: grad
    fails in torch's generic words and jvp would give zero tangents silently."""
    function = "layer_norm" if isinstance(module, ours.LayerNorm) else "rms_norm"
    with pytest.raises(RuntimeError, match=rf"lnbwd_iree.torch.{function} does not support torch.func.grad.*"
                                           rf"torch.autograd.grad.*torch.nn.functional.{function}"):
        transform(module, inputs(B, M, N))


@pytest.mark.parametrize("module", [ours.LayerNorm(N), ours.RMSNorm(N)], ids=lambda m: type(m).__name__)
def test_forward_mode_dual_tensors_are_refused_by_name(module):
    import torch.autograd.forward_ad as forward_ad

    x = inputs(B, N)
    with forward_ad.dual_level(), pytest.raises(RuntimeError, match="lnbwd_iree.torch's LayerNorm and RMSNorm have no"
                                                                    " forward-mode AD"):
        module(forward_ad.make_dual(x, torch.ones_like(x)))
