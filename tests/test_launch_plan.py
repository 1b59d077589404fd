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
    (dispatch,) = plan.entries["layernorm_forward"].dispatches
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
        assert entry.dispatches, name
        assert evaluate(entry.transients_size, {}, {}) > 0  # the column partials
        for dispatch in entry.dispatches:
            assert f".entry {dispatch.kernel}(" in ptx
            k = executable.kernels[dispatch.kernel]
            assert len(dispatch.bindings) == k.bindings and len(dispatch.constants) == k.constants
            assert all(isinstance(g, int) and g > 0 for g in dispatch.grid)  # static shape: a fixed grid
        # One dispatch writes the partials into the transients; the last sums them into the outputs.
        assert any(["transients"] in [list(b[0]) for b in d.bindings] for d in entry.dispatches[:-1])
        assert list(entry.dispatches[-1].bindings[0][0]) == ["transients"]
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
    assert store.load_plan(spec, CUDA).entries["layernorm_forward"].dispatches  # rebuilt


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
