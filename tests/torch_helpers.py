"""Helpers the torch test modules share (test modules do not import each other)."""

import numpy as np
import torch
from conftest import DEVICES_ENV, NAMED_DEVICES

from lnbwd_iree.reference import TOLERANCE as REFERENCE_TOLERANCE
from lnbwd_iree.torch import LayerNorm, binding_for

TOLERANCE = {
    torch.float32: REFERENCE_TOLERANCE["f32"],
    torch.float16: REFERENCE_TOLERANCE["f16"],
    torch.bfloat16: REFERENCE_TOLERANCE["bf16"],
}


def relative(a, b):
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm())


def fresh_seed():
    seed = int(np.random.SeedSequence().entropy % 2**31)
    print(f"seed={seed}")
    return seed


def randomize(module, seed):
    """Random affine parameters, so that a test cannot pass on ones and zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            values = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_(1 + 0.5 * values if name.endswith("weight") else values)


def pair(normalized_shape, dtype, seed, ours_class=LayerNorm, torch_class=torch.nn.LayerNorm, **kwargs):
    """Our LayerNorm (or ``ours_class``) and torch's (float64) with the same random affine parameters."""
    ours = ours_class(normalized_shape, dtype=dtype, **kwargs)
    randomize(ours, seed)
    reference = torch_class(normalized_shape, dtype=torch.float64, **kwargs)
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    return ours, reference


def gpu_devices():
    """torch's GPUs that IREE can open (none in CI). One that does not open
    is left out, unless LNBWD_IREE_TEST_DEVICES names cuda: then it is an error."""
    found = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        try:
            binding_for(torch.device("cuda", index))
        except RuntimeError as e:
            if "cuda" in NAMED_DEVICES:
                raise RuntimeError(f"cuda:{index} does not open, and {DEVICES_ENV} names cuda: {e}") from e
            continue
        found.append(f"cuda:{index}")
    return found


DEVICES = ["cpu", *gpu_devices()]


def check_against_float64(ours, reference, x_host, device, dtype):
    """Forward and all gradients of ``ours`` on ``device`` against ``reference`` in float64 on the CPU."""
    x = x_host.to(device).requires_grad_()
    x64 = x_host.double().requires_grad_()
    y, y64 = ours(x), reference(x64)
    assert y.dtype == dtype and y.shape == x.shape and y.device == x.device
    assert relative(y, y64) < TOLERANCE[dtype]
    dy = torch.randn(x_host.shape).to(dtype)
    params, params64 = list(ours.parameters()), list(reference.parameters())
    grads = torch.autograd.grad(y, [x, *params], dy.to(device))
    grads64 = torch.autograd.grad(y64, [x64, *params64], dy.double())
    for g, g64, p in zip(grads, grads64, [x, *params]):
        assert g.dtype == p.dtype and g.device == p.device and g.shape == p.shape
        assert relative(g, g64) < TOLERANCE[dtype]
