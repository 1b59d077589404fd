"""lnbwd_iree.torch against torch.nn.LayerNorm on the CPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lnbwd_iree import kernels_for  # noqa: E402
from lnbwd_iree.reference import TOLERANCE as REFERENCE_TOLERANCE  # noqa: E402
from lnbwd_iree.torch import LayerNorm, LayerNormFunction, as_device_array  # noqa: E402

TOLERANCE = {torch.float32: REFERENCE_TOLERANCE["f32"], torch.float16: REFERENCE_TOLERANCE["f16"], torch.bfloat16: REFERENCE_TOLERANCE["bf16"]}


def relative(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def pair(shape, dtype, seed):
    """Our LayerNorm and torch's with the same random affine parameters."""
    torch.manual_seed(seed)
    ours = LayerNorm(shape, dtype=dtype)
    with torch.no_grad():
        ours.weight.copy_(1 + 0.5 * torch.randn(ours.weight.shape))
        ours.bias.copy_(torch.randn(ours.bias.shape))
    reference = torch.nn.LayerNorm(shape, dtype=torch.float64)
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    return ours, reference


def devices():
    """cpu, and cuda where both torch and IREE's cuda driver see a GPU."""
    found = ["cpu"]
    if torch.cuda.is_available():
        try:
            kernels_for("cuda")
            found.append("cuda")
        except RuntimeError:
            pass
    return found


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(5, 100), (2, 3, 64), (1, 760)], ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_layer_norm(device, dtype, shape):
    """Outputs and gradients against torch.nn.LayerNorm in float64 on the CPU."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    ours, reference = pair(shape[-1], dtype, seed)
    ours = ours.to(device)
    x_host = (torch.randn(shape) * 2 + 0.5).to(dtype)
    x = x_host.to(device).requires_grad_()
    x64 = x_host.double().requires_grad_()
    y, y64 = ours(x), reference(x64)
    assert y.dtype == dtype and y.shape == x.shape and y.device == x.device
    assert relative(y.cpu(), y64) < TOLERANCE[dtype], f"seed={seed}"
    dy = torch.randn(shape).to(dtype)
    grads = torch.autograd.grad(y, [x, ours.weight, ours.bias], dy.to(device))
    grads64 = torch.autograd.grad(y64, [x64, reference.weight, reference.bias], dy.double())
    for name, g, g64 in zip(("dx", "dweight", "dbias"), grads, grads64):
        assert g.dtype == dtype and g.device == x.device
        assert relative(g.cpu(), g64) < TOLERANCE[dtype], f"{name} seed={seed}"


def test_state_dict_is_torch_layer_norms():
    ours, theirs = LayerNorm((4, 8)), torch.nn.LayerNorm((4, 8))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 8)
    assert relative(ours(x).detach(), theirs(x).detach()) < 1e-5


def test_without_affine_parameters():
    ours, theirs = LayerNorm(32, elementwise_affine=False), torch.nn.LayerNorm(32, elementwise_affine=False)
    assert list(ours.parameters()) == []
    x = torch.randn(6, 32, requires_grad=True)
    dy = torch.randn(6, 32)
    (dx,) = torch.autograd.grad(ours(x), [x], dy)
    (dx_ref,) = torch.autograd.grad(theirs(x), [x], dy)
    assert relative(dx, dx_ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_inputs_cross_without_copies(dtype):
    kernels = kernels_for("local-task")
    t = torch.randn(16, 32).to(dtype)
    array = as_device_array(kernels, t)
    bits = t.view(torch.int16).numpy() if dtype == torch.bfloat16 else t.numpy()
    assert np.shares_memory(np.asarray(array.to_host()), bits)


def test_rejects_what_it_cannot_run():
    kernels = kernels_for("local-task")
    with pytest.raises(NotImplementedError, match="CPU and CUDA tensors"):
        LayerNorm(8)(torch.zeros(2, 8, device="meta"))
    with pytest.raises(TypeError, match="unsupported dtype torch.int32"):
        as_device_array(kernels, torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="contiguous"):
        as_device_array(kernels, torch.zeros(4, 2).t())
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        LayerNorm(8)(torch.zeros(2, 7))


def test_training_matches_torch_layer_norm():
    """A small MLP with a LayerNorm, trained 100 steps with each implementation
    from the same seed: f32 rounding differences stay far below the loss scale."""

    def train(norm_class):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), norm_class(64), torch.nn.GELU(), torch.nn.Linear(64, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        data = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(100):
            x = torch.randn(32, 16, generator=data)
            target = x[:, :1] * 2 - x[:, 1:2]
            loss = torch.nn.functional.mse_loss(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return np.array(losses)

    ours, theirs = train(LayerNorm), train(torch.nn.LayerNorm)
    assert theirs[-1] < 0.5 * theirs[0], "the reference run did not learn; the comparison would be vacuous"
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 8), (2, 2, 5)], ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_in_double_precision(shape):
    """torch.autograd.gradcheck of the IREE forward and backward, f64 on the CPU."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    n = shape[-1]
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 0.5).reshape(-1, n).requires_grad_()
    weight = (1 + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.randn(n, generator=generator, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(LayerNormFunction.apply, (x, weight, bias, 1e-5))


def test_transformer_block_trains_like_torch_layer_norm():
    """A Transformer block trained 300 steps with torch's LayerNorm and with
    ours from the same seed: the loss curves agree to 1e-3 relative (f32
    rounding differences, compounded over the run) while the loss falls by
    over 30%."""
    from torch_training import make_model, train

    ours = np.array(train(make_model(LayerNorm), 300))
    theirs = np.array(train(make_model(torch.nn.LayerNorm), 300))
    assert theirs[-20:].mean() < 0.7 * theirs[:20].mean(), "the reference run did not learn"
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_ddp_on_two_processes_matches_one_process_on_the_whole_batch(tmp_path):
    """torch.distributed DDP (gloo, two local CPU processes, each on half of
    every batch) ends with the parameters of one process on whole batches."""
    import socket

    from torch_training import ddp_worker, make_model, train

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    steps = 30
    result = tmp_path / "ddp_state.pt"
    torch.multiprocessing.spawn(ddp_worker, args=(2, port, steps, str(result)), nprocs=2, join=True)
    distributed = torch.load(result)
    single = make_model(LayerNorm)
    train(single, steps)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
