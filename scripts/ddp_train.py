"""Data-parallel training with lnbwd_iree.torch.LayerNorm against nn.LayerNorm.

One process per GPU (or CPU process), started by torchrun:

    torchrun --nproc_per_node=2 scripts/ddp_train.py --device cuda --json ddp.json
    torchrun --nproc_per_node=2 scripts/ddp_train.py --device cpu --steps 5   # gloo, no GPU

Each process binds its IREE device to its own GPU (cuda:LOCAL_RANK). The same
Transformer block (tests/torch_training.py) is trained twice under
DistributedDataParallel from the same seed on the same data stream, once with
our LayerNorm and once with torch's; every rank trains its shard of each
global batch. Rank 0 reports, and writes to --json: whether every rank holds
the same parameters after each run, how far the two runs' parameters are
apart (relative norm error over all parameters, against --tolerance), and the
median step time of each. Exit status 1 when a check fails.

Artifacts are compiled (or found) once: rank 0 runs one LayerNorm step before
the other ranks start theirs, so they find it in the cache or the artifact
folder (LNBWD_IREE_ARTIFACTS) instead of all compiling it at once."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_training import make_model  # noqa: E402  (the block the tests train)

from lnbwd_iree.torch import LayerNorm  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    parser.add_argument("--width", type=int, default=1024, help="hidden size N (default %(default)s)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per sequence (default %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per rank and step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing (default %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest relative norm difference between the runs' parameters "
                             "(default 1e-4 for f32, 3e-2 for bf16)")
    parser.add_argument("--json", type=Path, default=None, help="where rank 0 writes the results")
    return parser.parse_args(argv)


def global_batches(args, device, dtype):
    """The same stream of global batches on every rank and in both runs."""
    generator = torch.Generator().manual_seed(1)
    world = dist.get_world_size()
    for _ in range(args.steps):
        x = torch.randn(world * args.batch, args.tokens, args.width, generator=generator)
        yield x.to(device, dtype), (torch.roll(x, 1, dims=1) * 0.5).to(device, dtype)


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


def train(norm_class, args, device, dtype) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model(norm_class, width=args.width).to(device, dtype)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    step_seconds = []
    for x, target in global_batches(args, device, dtype):
        x, target = x.chunk(world)[rank], target.chunk(world)[rank]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(ddp(x).float(), target.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    parameters = flat_parameters(model)
    gathered = [torch.empty_like(parameters) for _ in range(world)]
    dist.all_gather(gathered, parameters)
    rank_spread = max(float((g - gathered[0]).abs().max()) for g in gathered)
    return {
        "parameters": parameters,
        "ranks_identical": rank_spread == 0.0,
        "max_abs_difference_between_ranks": rank_spread,
        "median_step_ms": statistics.median(step_seconds[args.warmup:]) * 1e3,
        "final_loss": loss.item(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    tolerance = args.tolerance if args.tolerance is not None else (1e-4 if args.dtype == "f32" else 3e-2)
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        rank = dist.get_rank()
        # One rank finds or builds the artifacts; the others then load them.
        if rank == 0:
            probe = torch.randn(args.batch * args.tokens, args.width, device=device, dtype=dtype, requires_grad=True)
            LayerNorm(args.width, device=device, dtype=dtype)(probe).sum().backward()
        dist.barrier()
        ours = train(LayerNorm, args, device, dtype)
        theirs = train(torch.nn.LayerNorm, args, device, dtype)
        difference = float((ours["parameters"] - theirs["parameters"]).norm() / theirs["parameters"].norm())
        if rank != 0:
            return 0
        runs = {"lnbwd_iree": ours, "torch_nn_layernorm": theirs}
        for run in runs.values():
            del run["parameters"]
        report = {
            "world_size": dist.get_world_size(),
            "backend": dist.get_backend(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": args.dtype,
            "shape_per_rank": [args.batch, args.tokens, args.width],
            "steps": args.steps,
            "timed_steps": args.steps - args.warmup,
            "runs": runs,
            "relative_parameter_difference": difference,
            "tolerance": tolerance,
            "step_time_ratio": ours["median_step_ms"] / theirs["median_step_ms"],
        }
        ok = difference <= tolerance and all(run["ranks_identical"] for run in runs.values())
        report["ok"] = ok
        for name, run in runs.items():
            print(f"{name:20s} median step {run['median_step_ms']:8.2f} ms  final loss {run['final_loss']:.6f}  "
                  f"ranks identical: {run['ranks_identical']}")
        print(f"world {report['world_size']} ({report['backend']}), {args.dtype}, per rank {args.batch}x{args.tokens}x{args.width}: "
              f"parameters differ by {difference:.2e} (tolerance {tolerance:.0e}); "
              f"step time ours / torch = {report['step_time_ratio']:.3f}; {'OK' if ok else 'FAILED'}")
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter teardown: once in ~20 CPU runs a rank that had
    # finished and reported aborted in it ("terminate called without an active
    # exception", a joinable C++ thread destroyed at exit), turning a correct
    # run into a failed one. The results are written and the process group is
    # destroyed by then.
    os._exit(status)
