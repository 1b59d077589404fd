"""Launch plans, read when GPU artifacts are built (device-free: the plans are checked as data)."""

import json

import pytest

from lnbwd_iree import cache, compiler
from lnbwd_iree.kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD, RMSNORM_BACKWARD
from lnbwd_iree.launch_plan import LaunchPlan, PlanError, evaluate, f32_bits, read_plan
from lnbwd_iree.specialization import Specialization
from lnbwd_iree.targets import target_for

CUDA = target_for("cuda", "sm_80")


@pytest.fixture(scope="module")
def store(tmp_path_factory, iree_compiler_module):
    return cache.ArtifactStore(tmp_path_factory.mktemp("plans"))


@pytest.fixture(scope="module")
def iree_compiler_module():
    if compiler.compiler_version() is None:
        pytest.skip("iree-base-compiler is not installed")


def test_per_n_forward_plan_takes_m_at_call_time(store):
    plan = store.load_plan(Specialization.serving(LAYERNORM_FORWARD, "f32", None, 1024), CUDA)
    (dispatch,) = plan.entries["layernorm_forward"].steps
    kernel = plan.executables[dispatch.executable].kernels[dispatch.kernel]
    assert len(dispatch.bindings) == kernel.bindings == 6 and len(dispatch.constants) == kernel.constants
    for m in (1, 7, 12345, 70000):
        dims = {0: (m, 1024), 1: (1024,), 2: (1024,), 4: (m, 1024), 5: (m,), 6: (m,)}
        grid = [evaluate(g, dims, {3: f32_bits(1e-5)}) for g in dispatch.grid]
        constants = [evaluate(c, dims, {3: f32_bits(1e-5)}) for c in dispatch.constants]
        assert grid == [m, 1, 1]  # one row per workgroup
        assert constants[0] == f32_bits(1e-5) and m in constants
    # Every tensor argument is bound once (the outputs in IREE's order, not the function's).
    assert sorted(b[0][1] for b in dispatch.bindings) == [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("kernel", [LAYERNORM_BACKWARD, RMSNORM_BACKWARD], ids=lambda k: k.name)
def test_static_backward_plans_name_real_kernels_and_their_scratch(store, kernel):
    plan = store.load_plan(Specialization(kernel, "bf16", 8192, 4096), CUDA)
    (executable,) = plan.executables.values()
    ptx = b"".join(executable.images).decode()
    for name, entry in plan.entries.items():
        assert entry.steps, name
        assert evaluate(entry.transients_size, {}, {}) > 0  # the column partials
        for dispatch in entry.steps:
            assert f".entry {dispatch.kernel}(" in ptx
            k = executable.kernels[dispatch.kernel]
            assert len(dispatch.bindings) == k.bindings and len(dispatch.constants) == k.constants
            assert all(isinstance(g, int) and g > 0 for g in dispatch.grid)  # static shape: a fixed grid
        # One dispatch writes the partials into the transients; the last sums them into the outputs.
        assert any(["transients"] in [list(b[0]) for b in d.bindings] for d in entry.steps[:-1])
        assert list(entry.steps[-1].bindings[0][0]) == ["transients"]
    assert LaunchPlan.from_json(plan.to_json()) == plan


def test_a_gpu_artifact_without_its_plan_is_rebuilt(store):
    spec = Specialization.serving(LAYERNORM_FORWARD, "bf16", None, 512)
    path = store.get(spec, CUDA)
    cache.plan_path(path).unlink()
    with pytest.raises(cache.RejectedArtifact, match="launch plan .* is missing"):
        cache.check_artifact(path, spec, CUDA)
    record = json.loads(cache.record_path(path).read_text())
    record["plan_sha256"] = None
    cache.record_path(path).write_text(json.dumps(record))
    with pytest.raises(cache.RejectedArtifact, match="built without a launch plan"):
        cache.check_artifact(path, spec, CUDA)
    assert store.load_plan(spec, CUDA).entries["layernorm_forward"].steps  # rebuilt


def test_an_unknown_vm_op_is_an_error_naming_it():
    asm = """module {
  vm.module public @module {
    vm.func private @f(%arg0: !vm.ref<!hal.buffer_view>, %arg1: !vm.ref<!hal.buffer>, %arg2: !vm.ref<!hal.fence>, %arg3: !vm.ref<!hal.fence>) {
      %c1 = vm.const.i64 1
      %0 = vm.frobnicate.i64 %c1 : i64
      vm.return
    }
  }
}"""
    with pytest.raises(PlanError, match=r"the artifact: launch plan of f: VM op vm.frobnicate.i64 is not one"):
        read_plan(asm, ["f"], "the artifact")


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_a_command_buffer_recorded_at_load_time_is_read_with_the_calls_binding_table(store, dtype):
    """All-static tiny shapes: IREE records the backward's command buffer in
    __init and runs it with a binding table of the call's buffers
    (queue.execute.indirect); the plan holds its dispatches on those buffers."""
    plan = store.load_plan(Specialization(LAYERNORM_BACKWARD, dtype, 1, 64), CUDA)
    entry = plan.entries["layernorm_backward"]
    assert len(entry.steps) >= 2
    outputs = {5, 6, 7}  # dx, dweight, dbias (the VM function's arguments 5-7)
    written = set()
    for dispatch in entry.steps:
        kernel = plan.executables[dispatch.executable].kernels[dispatch.kernel]
        assert len(dispatch.bindings) == kernel.bindings
        for buffer, offset in dispatch.bindings:
            assert buffer[0] in ("arg", "transients") and isinstance(offset, int)
            if buffer[0] == "arg" and buffer[1] in outputs:
                written.add(buffer[1])
    assert written == outputs
    assert LaunchPlan.from_json(plan.to_json()) == plan


def test_buffer_copies_are_steps_of_the_plan(store):
    """f32 96x1000: IREE copies dweight and dbias out of the transients buffer
    (command_buffer.copy_buffer); the plan keeps them in order after the dispatches."""
    from lnbwd_iree.launch_plan import Copy

    plan = store.load_plan(Specialization(LAYERNORM_BACKWARD, "f32", 96, 1000), CUDA)
    for name, entry in plan.entries.items():
        copies = [s for s in entry.steps if isinstance(s, Copy)]
        assert len(copies) == 2, name
        first_output = 5 if name == "layernorm_backward" else 4
        assert sorted(c.target[0][1] for c in copies) == [first_output + 1, first_output + 2]
        for copy in copies:
            assert list(copy.source[0]) == ["transients"] and copy.length == 1000 * 4
            assert evaluate(copy.source[1], {}, {}) + copy.length <= evaluate(entry.transients_size, {}, {})
    assert LaunchPlan.from_json(plan.to_json()) == plan


def test_a_plan_in_another_format_is_rebuilt(store):
    spec = Specialization.serving(LAYERNORM_FORWARD, "f32", None, 512)
    path = store.get(spec, CUDA)
    plan = cache.plan_path(path).read_bytes()
    old = plan.replace(b'{"format":2,', b'{"format":1,', 1)
    cache.plan_path(path).write_bytes(old)
    record = json.loads(cache.record_path(path).read_text())
    record["plan_sha256"] = __import__("hashlib").sha256(old).hexdigest()
    cache.record_path(path).write_text(json.dumps(record))
    with pytest.raises(cache.RejectedArtifact, match="not in format 2"):
        cache.check_artifact(path, spec, CUDA)
    assert store.load_plan(spec, CUDA).entries["layernorm_forward"].steps  # rebuilt
