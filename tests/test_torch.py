"""lnbwd_iree.torch against torch.nn.LayerNorm (CPU, and CUDA where present)."""

import ctypes
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_helpers import DEVICES, TOLERANCE, check_against_float64, fresh_seed, pair, randomize, relative  # noqa: E402

import lnbwd_iree.torch as ours_module  # noqa: E402
from lnbwd_iree.torch import LayerNorm, binding_for, layer_norm_bwd, layer_norm_fwd  # noqa: E402

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(5, 100), (2, 3, 64), (1, 760)], ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_layer_norm(device, dtype, shape):
    """Outputs and gradients against torch.nn.LayerNorm in float64 on the CPU."""
    seed = fresh_seed()
    ours, reference = pair(shape[-1], dtype, seed)
    torch.manual_seed(seed)
    check_against_float64(ours.to(device), reference, (torch.randn(shape) * 2 + 0.5).to(dtype), device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "normalized_shape, input_shape, kwargs",
    [
        ((16,), (16,), {}),  # 1-D input: the input is one row of normalized_shape
        ((4, 8), (4, 8), {}),
        ((4, 8), (3, 4, 8), {}),
        ((3, 2, 5), (2, 3, 2, 5), {"bias": False}),
        ((24,), (5, 24), {"bias": False}),
    ],
    ids=["1d", "2d-no-batch", "2d", "3d-nobias", "nobias"],
)
def test_shapes_and_options_match_torch(device, normalized_shape, input_shape, kwargs):
    seed = fresh_seed()
    ours, reference = pair(normalized_shape, torch.float32, seed, **kwargs)
    torch.manual_seed(seed)
    check_against_float64(ours.to(device), reference, torch.randn(input_shape) * 2 + 0.5, device, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_weight(device):
    """A transposed weight and a strided bias, as nn.LayerNorm takes them."""
    seed = fresh_seed()
    ours, reference = pair((4, 8), torch.float32, seed)
    generator = torch.Generator().manual_seed(seed)
    ours.weight = torch.nn.Parameter(torch.randn(8, 4, generator=generator).t())
    ours.bias = torch.nn.Parameter(torch.randn(4, 16, generator=generator)[:, ::2])
    assert not ours.weight.is_contiguous() and not ours.bias.is_contiguous()
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    check_against_float64(ours.to(device), reference, torch.randn(6, 4, 8, generator=generator), device, torch.float32)


def test_state_dict_is_torch_layer_norms():
    ours, theirs = LayerNorm((4, 8)), torch.nn.LayerNorm((4, 8))
    randomize(ours, fresh_seed())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 8)
    assert relative(ours(x), theirs(x)) < 1e-5
    no_bias = LayerNorm(8, bias=False)
    assert no_bias.state_dict().keys() == torch.nn.LayerNorm(8, bias=False).state_dict().keys()


def test_without_affine_parameters():
    ours, theirs = LayerNorm(32, elementwise_affine=False), torch.nn.LayerNorm(32, elementwise_affine=False)
    assert list(ours.parameters()) == []
    x = torch.randn(6, 32, requires_grad=True)
    dy = torch.randn(6, 32)
    (dx,) = torch.autograd.grad(ours(x), [x], dy)
    (dx_ref,) = torch.autograd.grad(theirs(x), [x], dy)
    assert relative(dx, dx_ref) < 1e-5


def test_weights_updated_in_place_or_replaced_are_seen():
    """The imported weight is reused across calls: an optimizer's in-place
    update, a replaced parameter and a freed-and-reallocated one must all be
    what the next call reads."""
    ours, theirs = LayerNorm(32), torch.nn.LayerNorm(32)
    x = torch.randn(7, 32)
    for step in range(4):
        with torch.no_grad():
            if step == 1:
                ours.weight.mul_(-2.0).add_(0.25)  # in place: same memory
            elif step == 2:
                ours.weight = torch.nn.Parameter(torch.randn(32))  # new memory
            elif step == 3:
                del ours.bias
                ours.bias = torch.nn.Parameter(torch.randn(32))  # old freed, maybe reused
        theirs.load_state_dict(ours.state_dict())
        assert relative(ours(x), theirs(x)) < 1e-5, f"step {step}"


def test_borrowed_imports_are_reused_per_address_dtype_and_shape():
    """A borrowed import is cached by (address, dtype, shape); a call reads
    the memory when it runs, so new values written into the same tensor
    between calls are what the next call sees."""
    binding = binding_for(torch.device("cpu"))
    storage = torch.randn(8, 32)
    first = binding.borrowed(storage)
    assert binding.borrowed(storage) is first
    assert binding.borrowed(storage.view(4, 64)) is not first  # other shape
    assert binding.borrowed(storage[1:]) is not first  # other address
    assert binding.borrowed(storage.to(torch.bfloat16)) is not first  # other dtype (and memory)
    ours, theirs = LayerNorm(32), torch.nn.LayerNorm(32)
    randomize(ours, fresh_seed())
    theirs.load_state_dict(ours.state_dict())
    for step in range(3):
        with torch.no_grad():
            storage.copy_(torch.randn(8, 32) * (step + 1) + step)
        x = storage.requires_grad_() if step == 0 else storage
        dy = torch.randn(8, 32)
        ours_grads = torch.autograd.grad(ours(x), [x, ours.weight, ours.bias], dy)
        theirs_grads = torch.autograd.grad(theirs(x), [x, theirs.weight, theirs.bias], dy)
        assert relative(ours(x), theirs(x)) < 1e-5, f"step {step}"
        for a, b in zip(ours_grads, theirs_grads):
            assert relative(a, b) < 1e-4, f"step {step}"


def test_borrowed_imports_do_not_keep_tensors_alive():
    """The cached import is an address, not an owner: a tensor passed to a
    call is freed when its last Python reference goes, and a new tensor at
    the same address (torch's allocator reuses it) gets the right results."""
    import gc
    import weakref

    binding = binding_for(torch.device("cpu"))
    ours, theirs = LayerNorm(48), torch.nn.LayerNorm(48)
    randomize(ours, fresh_seed())
    theirs.load_state_dict(ours.state_dict())
    for step in range(4):
        x = torch.randn(16, 48) * (step + 1)
        y = ours(x)
        assert relative(y, theirs(x)) < 1e-5, f"step {step}"
        alive = weakref.ref(x), weakref.ref(y)
        del x, y
        gc.collect()
        assert alive[0]() is None and alive[1]() is None, f"step {step}: an import kept a tensor alive"
    assert len(binding._borrowed) <= binding.BORROWED_CACHE_SIZE


def test_borrowed_imports_cache_is_bounded(monkeypatch):
    binding = binding_for(torch.device("cpu"))
    monkeypatch.setattr(binding._borrowed, "size", 3)
    tensors = [torch.randn(4, 8) for _ in range(6)]
    arrays = [binding.borrowed(t) for t in tensors]
    assert len(binding._borrowed) == 3
    assert binding.borrowed(tensors[-1]) is arrays[-1]  # the newest stay
    assert binding.borrowed(tensors[0]) is not arrays[0]  # the oldest was dropped and is imported again


def test_tensors_of_a_call_that_failed_after_queuing_are_kept(monkeypatch):
    """A call that raises once work may be queued (the runtime moved to a new
    timeline) keeps its tensors alive: the borrowed imports do not, and the
    device may still write them. A call rejected before queuing keeps nothing."""
    binding = binding_for(torch.device("cpu"))
    kernels = binding.kernels
    x, weight, bias = torch.randn(4, 16), torch.randn(16), torch.randn(16)

    def failing_after_queue(*args, **kwargs):
        kernels._timeline = kernels.device.create_semaphore(0)  # as _restart_timeline does
        kernels._last_signal = 0
        raise RuntimeError("submission failed")

    def rejected(*args, **kwargs):
        raise ValueError("rejected before queuing")

    kept = len(binding._kept_after_failure)
    monkeypatch.setattr(kernels, "call_checked", rejected)
    with pytest.raises(ValueError, match="rejected before queuing"):
        ours_module._forward_kernel(x, weight, bias, 1e-5)
    assert len(binding._kept_after_failure) == kept
    monkeypatch.setattr(kernels, "call_checked", failing_after_queue)
    with pytest.raises(RuntimeError, match="submission failed"):
        ours_module._forward_kernel(x, weight, bias, 1e-5)
    assert len(binding._kept_after_failure) == kept + 1
    assert binding._kept_after_failure[-1][0].data_ptr() == x.data_ptr()
    monkeypatch.undo()
    binding._kept_after_failure.pop()
    y, _, _ = ours_module._forward_kernel(x, weight, bias, 1e-5)  # the new timeline serves later calls
    assert relative(y, torch.nn.functional.layer_norm(x, (16,), weight, bias)) < 1e-5


def test_orderings_that_do_not_wait_get_owning_imports():
    """HIP's ordering returns before IREE's work is done, so an import must
    own its tensor until IREE releases it: ``borrowed`` falls back to ``array``."""
    class NoWait:
        wait = False

    binding = ours_module.IreeBinding(binding_for(torch.device("cpu")).kernels, NoWait())
    tensor = torch.randn(4, 8)
    first = binding.borrowed(tensor)
    assert binding.borrowed(tensor) is not first and not binding._borrowed


def test_rejects_what_it_cannot_run():
    with pytest.raises(NotImplementedError, match="CPU and CUDA/ROCm tensors"):
        binding_for(torch.device("xpu"))
    with pytest.raises(TypeError, match="unsupported dtype torch.int32"):
        layer_norm_fwd(torch.zeros(2, 4, dtype=torch.int32), None, None, 1e-5)
    with pytest.raises(ValueError, match=r"last 1 dims are \(8,\), got shape \(2, 7\)"):
        LayerNorm(8)(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        layer_norm_fwd(torch.randn(2, 4), torch.randn(5), None, 1e-5)


@pytest.mark.parametrize("eps", ["1e-5", None, True], ids=repr)
def test_eps_that_is_not_a_number_is_refused_by_name(eps):
    x = torch.randn(2, 8)
    calls = [lambda: LayerNorm(8, eps=eps)(x), lambda: ours_module.layer_norm(x, (8,), eps=eps)]
    if eps is not None:  # RMSNorm's default
        calls += [lambda: ours_module.rms_norm(x, (8,), eps=eps), lambda: ours_module.RMSNorm(8, eps=eps)(x)]
    for call in calls:
        with pytest.raises(TypeError, match=f"eps must be a real number .int or float., got {type(eps).__name__}"):
            call()


@pytest.mark.parametrize("module", [LayerNorm(8), ours_module.RMSNorm(8, eps=1e-6)], ids=lambda m: type(m).__name__)
def test_eps_is_checked_once_per_call(module, monkeypatch):
    """Once in the public function: not again in the binding or in LayerNormKernels.call."""
    import lnbwd_iree.runtime as runtime

    checked = []
    check = runtime.check_eps
    counting = lambda eps: checked.append(eps) or check(eps)  # noqa: E731
    monkeypatch.setattr(runtime, "check_eps", counting)
    monkeypatch.setattr(ours_module, "check_eps", counting)
    x = torch.randn(4, 8, requires_grad=True)
    y = module(x)
    assert len(checked) == 1
    y.sum().backward()
    assert len(checked) == 1


@pytest.mark.parametrize("call", [lambda x: layer_norm_fwd(x, None, None, -1.0),
                                  lambda x: ours_module.rms_norm_fwd(x, None, float("nan"))],
                         ids=["layer_norm_fwd", "rms_norm_fwd"])
def test_the_custom_ops_called_directly_check_eps(call):
    with pytest.raises(ValueError, match="eps must be a number in"):
        call(torch.randn(4, 8))


@pytest.mark.parametrize("module", [LayerNorm(8), ours_module.RMSNorm(8)], ids=lambda m: type(m).__name__)
def test_torchscript_is_refused_with_the_way_forward(module):
    name = type(module).__name__
    for scripted in (module, torch.nn.Sequential(torch.nn.Linear(8, 8), module)):
        with pytest.raises(RuntimeError, match=rf"lnbwd_iree.torch.{name} cannot be compiled by TorchScript "
                                               r"\(torch.jit.script\).*Use torch.compile or torch.export"):
            torch.jit.script(scripted)


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


def f64_inputs(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    weight = (1 + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.randn(n, generator=generator, dtype=torch.float64).requires_grad_()
    return x, weight, bias


def layer_norm_output(x, weight, bias):
    return layer_norm_fwd(x, weight, bias, 1e-5)[0]


@pytest.mark.parametrize("shape", [(3, 8), (2, 2, 5)], ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_in_double_precision(shape):
    """torch.autograd.gradcheck of the IREE forward and backward, f64 on the CPU."""
    assert torch.autograd.gradcheck(layer_norm_output, f64_inputs(shape, fresh_seed()))


def test_gradgradcheck_in_double_precision():
    """Double backward (issue 11, case 4): with create_graph the backward is
    computed by differentiable torch ops, so second derivatives are exact."""
    assert torch.autograd.gradgradcheck(layer_norm_output, f64_inputs((3, 6), fresh_seed()))


def test_double_backward_through_another_path():
    """Issue 11's reproduction: the graph is kept alive by another path, so a
    dropped second-order term would show as a wrong s.grad with no error."""

    def s_grad(norm):
        torch.manual_seed(3)
        x = torch.randn(4, 8, dtype=torch.float64)
        s = torch.randn(8, dtype=torch.float64, requires_grad=True)
        a = x * s
        loss = norm(a).pow(2).sum() + a.pow(3).sum()
        (g,) = torch.autograd.grad(loss, [a], create_graph=True)
        g.square().sum().backward()
        return s.grad

    reference = s_grad(torch.nn.LayerNorm(8, dtype=torch.float64))
    assert relative(s_grad(LayerNorm(8, dtype=torch.float64)), reference) < 1e-10


@pytest.mark.parametrize("reduce", ["dy-zeros", "sum"])
def test_empty_batch_gives_zero_parameter_grads(reduce):
    """Issue 11, case 3: M == 0 gives weight.grad == bias.grad == 0, also with
    the stride-0 zero-size gradient that .sum().backward() produces."""
    ours = LayerNorm(16)
    x = torch.randn(0, 16, requires_grad=True)
    y = ours(x)
    assert y.shape == (0, 16)
    if reduce == "sum":
        y.sum().backward()
    else:
        y.backward(torch.zeros(0, 16))
    assert torch.equal(ours.weight.grad, torch.zeros(16))
    assert torch.equal(ours.bias.grad, torch.zeros(16))
    assert x.grad.shape == (0, 16)


def test_opcheck_forward_and_backward():
    x, weight, bias = f64_inputs((5, 12), fresh_seed())
    x, weight, bias = x.float(), weight.float(), bias.float()
    torch.library.opcheck(layer_norm_fwd, (x.detach().requires_grad_(), weight.detach().requires_grad_(), bias.detach(), 1e-5))
    torch.library.opcheck(layer_norm_fwd, (x.detach(), None, None, 1e-5))
    _, mean, rstd = layer_norm_fwd(x.detach(), weight.detach(), bias.detach(), 1e-5)
    torch.library.opcheck(layer_norm_bwd, (torch.randn(5, 12), x.detach(), weight.detach(), mean, rstd))


def test_cpu_autocast_bf16_matches_torch():
    """Under CPU autocast a Linear yields bf16 while the LayerNorm's parameters
    stay f32; torch's layer_norm then runs in bf16 (CPU autocast leaves it
    alone): the same output dtype and accuracy here."""
    seed = fresh_seed()
    ours, reference = pair(64, torch.float32, seed)
    theirs = torch.nn.LayerNorm(64)
    theirs.load_state_dict(ours.state_dict())
    linear = torch.nn.Linear(32, 64)
    x = torch.randn(10, 32, generator=torch.Generator().manual_seed(seed))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = linear(x)
        assert h.dtype == torch.bfloat16
        y, y_torch = ours(h), theirs(h)
    assert y.dtype == y_torch.dtype == torch.bfloat16
    y64 = reference(h.double())
    assert relative(y, y64) < TOLERANCE[torch.bfloat16]
    assert relative(y, y64) < 2 * relative(y_torch, y64) + 2**-9
    grads = torch.autograd.grad(y.float().square().sum(), list(ours.parameters()))
    grads64 = torch.autograd.grad(y64.square().sum(), list(reference.parameters()))
    for g, g64 in zip(grads, grads64):
        assert g.dtype == torch.float32 and relative(g, g64) < 4 * TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_cuda_autocast_runs_in_float32_like_torch(device):
    seed = fresh_seed()
    ours, reference = pair(256, torch.float32, seed)
    theirs = torch.nn.LayerNorm(256, device=device)
    ours = ours.to(device)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(64, 256, device=device, dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, y_torch = ours(x), theirs(x)
    assert y.dtype == y_torch.dtype == torch.float32
    assert relative(y, reference(x.double().cpu())) < TOLERANCE[torch.float32]


def make_block(norm_class, seed=0):
    from torch_training import make_model

    return make_model(norm_class, seed=seed)


def refuse_eager_path(monkeypatch):
    """Under tracing the custom ops must be used, not the eager shortcut."""

    def refuse(*args):
        raise AssertionError("the eager path ran under tracing")

    monkeypatch.setattr(ours_module._EagerLayerNorm, "apply", refuse)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
def test_torch_compile_of_a_transformer_block(fullgraph, monkeypatch):
    """torch.compile of a Transformer block with our LayerNorm: the outputs and
    every parameter's gradient match the same block with nn.LayerNorm, eager."""
    torch._dynamo.reset()
    seed = fresh_seed()
    ours, theirs = make_block(LayerNorm, seed), make_block(torch.nn.LayerNorm, seed)
    randomize(ours.norm1, seed)
    randomize(ours.norm2, seed + 1)
    theirs.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, fullgraph=fullgraph)
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(seed))
    y_ref = theirs(x)
    refuse_eager_path(monkeypatch)
    backward_calls = []
    backward_kernel = ours_module._backward_kernel
    monkeypatch.setattr(ours_module, "_backward_kernel", lambda *a: backward_calls.append(1) or backward_kernel(*a))
    y = compiled(x)
    assert relative(y, y_ref) < 1e-5
    dy = torch.randn(y.shape)
    y.backward(dy)
    y_ref.backward(dy)
    assert len(backward_calls) == 2, "the compiled backward must run the IREE kernel for both norms"
    for (name, p), p_ref in zip(ours.named_parameters(), theirs.parameters()):
        assert relative(p.grad, p_ref.grad) < 1e-4, name


def test_torch_export_of_a_transformer_block(monkeypatch):
    seed = fresh_seed()
    ours = make_block(LayerNorm, seed)
    randomize(ours.norm1, seed)
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(seed))
    x2 = torch.randn(2, 6, 32)
    eager = ours(x2)
    with monkeypatch.context() as patch:
        refuse_eager_path(patch)
        exported = torch.export.export(ours, (x,))
    names = {str(node.target) for node in exported.graph.nodes}
    assert "lnbwd_iree.layer_norm_fwd.default" in names
    assert relative(exported.module()(x2), eager) < 1e-6


class FakeSemaphore:
    def __init__(self):
        self.exports = []

    def export_timepoint(self, value, requested_type, flags, timepoint):
        self.exports.append((value, requested_type, timepoint))


class FakeKernels:
    def __init__(self, last_signal):
        self.timeline = FakeSemaphore()
        self.last_signal = last_signal

    def queued(self):
        return self.timeline, self.last_signal


class FakeHip:
    def __init__(self, status=0):
        self.waits = []
        self.status = status

    def hipStreamWaitEvent(self, stream, event, flags):  # noqa: N802 (HIP's name)
        self.waits.append((stream.value, event.value, flags.value))
        return self.status


def test_hip_ordering_makes_torch_stream_wait_for_the_call_on_the_device():
    """Not run on AMD hardware (none here): after a call, the semaphore value
    that call signals is exported as a HIP event and torch's stream waits on it."""
    from iree import runtime as ireert

    hip = FakeHip()
    ordering = ours_module.HipStreamOrdering(0x7F00, hip)
    assert ordering.wait is False
    kernels = FakeKernels(last_signal=5)
    ordering.before()
    ordering.after(kernels)
    (value, requested_type, timepoint), = kernels.timeline.exports
    assert value == 5 and requested_type == ireert.ExternalTimepointType.HIP_EVENT
    assert hip.waits == [(0x7F00, timepoint.hip_event or None, 0)]
    with pytest.raises(RuntimeError, match="hipStreamWaitEvent .* hipError_t 1"):
        ours_module.HipStreamOrdering(0x7F00, FakeHip(status=1)).after(kernels)


def test_hip_devices_are_created_on_torchs_stream(monkeypatch):
    """On a ROCm torch (faked): one IREE hip device per (GPU, stream), created
    with hip_external_stream = that stream and matched to the GPU by UUID."""
    created = []
    stream = {"handle": 0x1000}

    class Props:
        def __init__(self, index):
            self.uuid = f"uuid-{index}"
            self.gcnArchName = "gfx942:sramecc+:xnack-"

    class Driver:
        def query_available_devices(self):
            return [{"device_id": 7, "path": "GPU-uuid-1"}, {"device_id": 8, "path": "GPU-uuid-0"}]

        def create_device(self, info, params):
            created.append((info["device_id"], params))
            return object()

    class Stream:
        @property
        def cuda_stream(self):
            return stream["handle"]

    class Kernels:
        def __init__(self, driver, chip=None, hal_device=None):
            self.driver, self.chip = driver, chip

    monkeypatch.setattr(torch.version, "hip", "6.2")
    monkeypatch.setattr(ours_module, "GPU_PATH", "iree")  # a ROCm torch's default, read at import
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: Stream())
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props(index))
    monkeypatch.setattr(ours_module.ireert, "get_driver", lambda name: Driver())
    monkeypatch.setattr(ours_module, "LayerNormKernels", Kernels)
    monkeypatch.setattr(ours_module, "_hip_runtime", lambda: ctypes)
    monkeypatch.setattr(ours_module, "_bindings", {})
    first = binding_for(torch.device("cuda", 0))
    assert binding_for(torch.device("cuda", 0)) is first
    stream["handle"] = 0x2000
    second = binding_for(torch.device("cuda", 0))
    third = binding_for(torch.device("cuda", 1))
    assert second is not first and third is not second
    assert created == [
        (8, {"hip_external_stream": str(0x1000)}),
        (8, {"hip_external_stream": str(0x2000)}),
        (7, {"hip_external_stream": str(0x2000)}),
    ]
    assert first.kernels.chip == "gfx942" and isinstance(first.ordering, ours_module.HipStreamOrdering)
    assert second.ordering.stream_handle == 0x2000


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


def test_ops_are_kept_out_of_cuda_graphs_only_through_iree():
    """Through IREE's runtime the ops synchronise with the host or IREE's queue,
    which a CUDA graph replay would skip; the direct launches are capturable."""
    through_iree = ours_module.GPU_PATH == "iree"
    for op in (torch.ops.lnbwd_iree.layer_norm_fwd.default, torch.ops.lnbwd_iree.layer_norm_bwd.default,
               torch.ops.lnbwd_iree.rms_norm_fwd.default, torch.ops.lnbwd_iree.rms_norm_bwd.default):
        assert (torch.Tag.cudagraph_unsafe in op.tags) == through_iree


def test_gpu_device_matching_by_uuid_then_ordinal(monkeypatch):
    """torch's cuda:N is IREE's device with the same UUID; without UUIDs in
    IREE's paths, the same ordinal; a missing one is named in the error."""

    class Props:
        def __init__(self, index):
            self.uuid = f"uuid-{index}"

    class Driver:
        def __init__(self, infos):
            self.infos = infos

        def query_available_devices(self):
            return self.infos

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props(index))
    by_uuid = Driver([{"device_id": 1, "path": "GPU-uuid-1"}, {"device_id": 0, "path": "GPU-uuid-0"}])
    assert ours_module._iree_device_info(by_uuid, "cuda", 0)["device_id"] == 0
    by_ordinal = Driver([{"device_id": 0, "path": "0"}, {"device_id": 1, "path": "1"}])
    assert ours_module._iree_device_info(by_ordinal, "hip", 1)["device_id"] == 1
    with pytest.raises(RuntimeError, match=r"cuda:2 \(uuid uuid-2\) has no IREE 'hip' device: IREE lists \['0', '1'\]"):
        ours_module._iree_device_info(by_ordinal, "hip", 2)


def test_ddp_train_script_with_torchrun_on_two_cpu_processes(tmp_path):
    """scripts/ddp_train.py, as torchrun starts it (gloo, two CPU processes):
    both runs end with the same parameters on every rank, and ours agree with
    nn.LayerNorm's within the script's f32 tolerance."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    report = tmp_path / "ddp.json"
    script = Path(__file__).resolve().parent.parent / "scripts" / "ddp_train.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               "--device", "cpu", "--width", "32", "--tokens", "6", "--batch", "4", "--steps", "6", "--warmup", "2",
               "--lr", "0.05", "--json", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert all(run["ranks_identical"] for run in result["runs"].values())
    assert result["relative_parameter_difference"] <= result["tolerance"] == 1e-4
    assert result["ok"]


DIRECT_CUDA = [d for d in DEVICES if d != "cpu" and not torch.version.hip and ours_module.GPU_PATH == "direct"]


@pytest.mark.parametrize("device", DIRECT_CUDA)
def test_cuda_calls_queue_behind_the_gpu_without_a_host_wait(device):
    """On the direct path a training step is queued on torch's stream: behind a
    ~0.5 s GPU sleep, the host returns long before the sleep ends."""
    ln = LayerNorm(1024, device=device)
    x = torch.randn(4096, 1024, device=device, requires_grad=True)
    ln(x).backward(torch.randn_like(x))  # binds and loads outside the timed part
    torch.cuda.synchronize(device)
    sleep = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.device(device):
        sleep[0].record()
        torch.cuda._sleep(1_000_000_000)
        sleep[1].record()
        start = time.perf_counter()
        for _ in range(5):
            ln(x).backward(torch.randn_like(x))
        host_s = time.perf_counter() - start
        torch.cuda.synchronize(device)
    slept_s = sleep[0].elapsed_time(sleep[1]) / 1e3
    assert slept_s > 0.2, f"the GPU sleep took {slept_s:.3f} s; it must outlast the host's steps"
    assert host_s < slept_s / 4, f"5 queued steps took {host_s:.3f} s on the host, behind a {slept_s:.3f} s GPU sleep"


def graph_inputs(device, dtype, seed):
    generator = torch.Generator(device=device).manual_seed(seed)
    x = (torch.randn(512, 768, device=device, generator=generator) * 2 + 0.5).to(dtype)
    return x, torch.randn(512, 768, device=device, generator=generator).to(dtype)


@pytest.mark.parametrize("device", DIRECT_CUDA)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_cuda_graph_of_a_training_step_replays_eager_results(device, dtype, norm):
    """A forward + backward step captured in torch.cuda.graph, replayed on new
    inputs copied into the static ones, gives what eager gives on them."""
    seed = fresh_seed()
    ours_class = LayerNorm if norm == "layernorm" else ours_module.RMSNorm
    module = ours_class(768, device=device, dtype=dtype)
    randomize(module, seed)
    static_x, static_dy = graph_inputs(device, dtype, seed)
    static_x.requires_grad_()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            module.zero_grad(set_to_none=True)
            static_x.grad = None
            module(static_x).backward(static_dy)
    torch.cuda.current_stream(device).wait_stream(side)
    module.zero_grad(set_to_none=True)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = module(static_x)
        static_y.backward(static_dy)
    new_x, new_dy = graph_inputs(device, dtype, seed + 1)
    with torch.no_grad():
        static_x.copy_(new_x)
        static_dy.copy_(new_dy)
    for p in (static_x, *module.parameters()):
        p.grad.fill_(float("nan"))  # poisoned: the replay must write every gradient
    graph.replay()
    torch.cuda.synchronize(device)
    eager_x = new_x.clone().requires_grad_()
    eager = ours_class(768, device=device, dtype=dtype)
    eager.load_state_dict(module.state_dict())
    eager_y = eager(eager_x)
    eager_y.backward(new_dy)
    assert torch.equal(static_y, eager_y)
    assert torch.equal(static_x.grad, eager_x.grad)
    for p, q in zip(module.parameters(), eager.parameters()):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("device", DIRECT_CUDA)
def test_cuda_reduce_overhead_compile_of_a_training_step_matches_eager(device):
    """torch.compile(mode="reduce-overhead") (CUDA graphs through Inductor) of
    a block with our LayerNorm: no cudagraph skip, results equal to eager."""
    torch._dynamo.reset()
    seed = fresh_seed()
    block = make_block(LayerNorm, seed).to(device)
    reference = make_block(LayerNorm, seed).to(device)
    reference.load_state_dict(block.state_dict())
    compiled = torch.compile(block, mode="reduce-overhead")
    for step in range(4):  # recorded, then replayed on fresh inputs
        torch.compiler.cudagraph_mark_step_begin()
        block.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
        x = torch.randn(2, 6, 32, device=device, generator=torch.Generator(device=device).manual_seed(seed + step))
        y, y_eager = compiled(x), reference(x)
        assert relative(y, y_eager) < 1e-6, step
        dy = torch.randn_like(y)
        y.backward(dy)
        y_eager.backward(dy)
        for (name, p), q in zip(block.named_parameters(), reference.parameters()):
            assert relative(p.grad, q.grad) < 1e-5, (step, name)


def test_gpu_path_defaults_to_direct_on_cuda_and_to_iree_on_rocm(monkeypatch):
    monkeypatch.delenv("LNBWD_IREE_TORCH_CUDA_PATH", raising=False)
    monkeypatch.delenv("LNBWD_IREE_TORCH_HIP_PATH", raising=False)
    monkeypatch.setattr(torch.version, "hip", None)
    assert ours_module.gpu_path() == "direct"
    monkeypatch.setenv("LNBWD_IREE_TORCH_CUDA_PATH", "iree")
    assert ours_module.gpu_path() == "iree"
    monkeypatch.setattr(torch.version, "hip", "6.4")
    assert ours_module.gpu_path() == "iree"  # the HIP direct launch has not run on AMD hardware: opt-in
    monkeypatch.setenv("LNBWD_IREE_TORCH_HIP_PATH", "direct")
    assert ours_module.gpu_path() == "direct"
    monkeypatch.setenv("LNBWD_IREE_TORCH_HIP_PATH", "fast")
    with pytest.raises(ValueError, match=r"LNBWD_IREE_TORCH_HIP_PATH='fast'; expected one of \('direct', 'iree'\)"):
        ours_module.gpu_path()
