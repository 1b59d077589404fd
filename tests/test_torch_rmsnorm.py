"""lnbwd_iree.torch.RMSNorm against torch.nn.RMSNorm (CPU, and CUDA where present)."""

import pytest

torch = pytest.importorskip("torch")

import torch_helpers  # noqa: E402
from torch_helpers import DEVICES, TOLERANCE, check_against_float64, fresh_seed, relative  # noqa: E402

from lnbwd_iree.torch import RMSNorm, rms_norm_bwd, rms_norm_fwd  # noqa: E402
from lnbwd_iree.torch import rms_norm as ours_rms_norm  # noqa: E402


def pair(normalized_shape, dtype, seed, **kwargs):
    """Our RMSNorm and torch's (float64) with the same random weight."""
    return torch_helpers.pair(normalized_shape, dtype, seed, RMSNorm, torch.nn.RMSNorm, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(5, 100), (2, 3, 64), (1, 760)], ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_rms_norm(device, dtype, shape):
    seed = fresh_seed()
    # eps as the models use it: torch's default (the arithmetic type's epsilon)
    # would differ between f32 and the float64 reference.
    ours, reference = pair(shape[-1], dtype, seed, eps=1e-6)
    torch.manual_seed(seed)
    check_against_float64(ours.to(device), reference, torch.randn(shape).to(dtype), device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "normalized_shape, input_shape, kwargs",
    [((16,), (16,), {}), ((4, 8), (3, 4, 8), {}), ((24,), (5, 24), {"elementwise_affine": False})],
    ids=["1d", "2d", "no-weight"],
)
def test_shapes_and_options_match_torch(device, normalized_shape, input_shape, kwargs):
    seed = fresh_seed()
    ours, reference = pair(normalized_shape, torch.float32, seed, **kwargs)
    torch.manual_seed(seed)
    check_against_float64(ours.to(device), reference, torch.randn(input_shape), device, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_default_eps_is_torchs(dtype):
    """eps=None: torch's rule, finfo of the arithmetic type (f32 for f16 and bf16
    data), as nn.RMSNorm and F.rms_norm; visible on rows of small RMS, where
    f16's or bf16's own epsilon would be 1e-1 to 1e2 of mean(x^2)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    x = (1e-2 * torch.randn(6, 64, generator=generator, dtype=torch.float64)).to(dtype)
    weight = 1 + 0.5 * torch.randn(64, generator=generator, dtype=torch.float64)
    dy = torch.randn(6, 64, generator=generator, dtype=torch.float64).to(dtype)
    ours = RMSNorm(64, dtype=dtype)
    theirs = torch.nn.RMSNorm(64, dtype=dtype)
    with torch.no_grad():
        ours.weight.copy_(weight)
        theirs.weight.copy_(weight)
    assert ours.eps is None and theirs.eps is None
    # float64, with the epsilon torch documents for this dtype.
    x64 = x.double().requires_grad_()
    y64 = torch.nn.functional.rms_norm(x64, (64,), weight, eps=torch.finfo(torch.float32).eps)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    x_ours = x.clone().requires_grad_()
    y = ours(x_ours)
    (dx,) = torch.autograd.grad(y, x_ours, dy)
    for name, got in [("nn.RMSNorm", theirs(x)), ("F.rms_norm", torch.nn.functional.rms_norm(x, (64,), theirs.weight)),
                      ("ours", y), ("our functional", ours_rms_norm(x, (64,), ours.weight))]:
        assert relative(got, y64) < TOLERANCE[dtype], name
    assert relative(dx, dx64) < TOLERANCE[dtype]
    assert relative(y, theirs(x)) < 2 * TOLERANCE[dtype]


def test_default_eps_differs_from_a_larger_one():
    """The check above can fail: an eps of the order of mean(x^2) changes y."""
    x = torch.full((2, 8), 1e-2)
    assert relative(RMSNorm(8, eps=1e-4)(x), torch.nn.RMSNorm(8)(x)) > 0.2


def test_state_dict_is_torch_rms_norms():
    ours, theirs = RMSNorm((4, 8)), torch.nn.RMSNorm((4, 8))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    assert repr(ours).replace("RMSNorm", "") == repr(theirs).replace("RMSNorm", "")


def f64_inputs(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
    weight = (1 + 0.5 * torch.randn(shape[-1], generator=generator, dtype=torch.float64)).requires_grad_()
    return x, weight


def rms_norm_output(x, weight):
    return rms_norm_fwd(x, weight, 1e-5)[0]


@pytest.mark.parametrize("shape", [(3, 8), (2, 2, 5)], ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_in_double_precision(shape):
    assert torch.autograd.gradcheck(rms_norm_output, f64_inputs(shape, fresh_seed()))


def test_gradgradcheck_in_double_precision():
    assert torch.autograd.gradgradcheck(rms_norm_output, f64_inputs((3, 6), fresh_seed()))


def test_eager_path_gradcheck():
    """The plain-eager autograd.Function path (the module's) in double precision."""
    x, weight = f64_inputs((4, 6), fresh_seed())
    module = RMSNorm(6, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(weight)
    assert torch.autograd.gradcheck(lambda x_: module(x_), (x,))


def test_empty_batch_gives_zero_weight_grad():
    ours = RMSNorm(16)
    x = torch.randn(0, 16, requires_grad=True)
    y = ours(x)
    assert y.shape == (0, 16)
    y.sum().backward()
    assert torch.equal(ours.weight.grad, torch.zeros(16)) and x.grad.shape == (0, 16)


def test_opcheck_forward_and_backward():
    x, weight = (t.detach().float() for t in f64_inputs((5, 12), fresh_seed()))
    torch.library.opcheck(rms_norm_fwd, (x.requires_grad_(), weight.requires_grad_(), 1e-5))
    torch.library.opcheck(rms_norm_fwd, (x.detach(), None, 1e-5))
    _, rstd = rms_norm_fwd(x.detach(), weight.detach(), 1e-5)
    torch.library.opcheck(rms_norm_bwd, (torch.randn(5, 12), x.detach(), weight.detach(), rstd))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    module = RMSNorm(32, eps=1e-6)
    x = torch.randn(4, 32, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    dy = torch.randn(4, 32)  # sum(y^2) would have a zero gradient (rows are unit RMS)
    y = compiled(x)
    (y * dy).sum().backward()
    reference = torch.nn.RMSNorm(32, eps=1e-6)
    x_ref = x.detach().clone().requires_grad_()
    (reference(x_ref) * dy).sum().backward()
    assert relative(y, reference(x_ref)) < 1e-5 and relative(x.grad, x_ref.grad) < 1e-5
