"""A small Transformer block and its training loops, for tests/test_torch.py
(a module of its own so that DDP's spawned processes can import it)."""

import gc
import os

import torch


class Block(torch.nn.Module):
    """Pre-norm self-attention and MLP, with a choosable LayerNorm class."""

    def __init__(self, width, norm_class):
        super().__init__()
        self.norm1 = norm_class(width)
        self.attention = torch.nn.MultiheadAttention(width, 2, batch_first=True)
        self.norm2 = norm_class(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def make_model(norm_class, width=32, seed=0):
    torch.manual_seed(seed)
    return Block(width, norm_class)


def batches(steps, batch=8, tokens=6, width=32):
    """The same data stream for every run: inputs and a target to regress."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(batch, tokens, width, generator=generator)
        yield x, torch.roll(x, 1, dims=1) * 0.5


def train(model, steps, lr=0.05, shard=None):
    """SGD on mean-squared error; ``shard`` = (rank, world) trains on that
    slice of every batch (the DDP wrapper averages gradients across ranks)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for x, target in batches(steps):
        if shard is not None:
            rank, world = shard
            x, target = x.chunk(world)[rank], target.chunk(world)[rank]
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def ddp_worker(rank, world, port, steps, result_path):
    """One DDP process: trains its shard with gloo; rank 0 saves the parameters."""
    from lnbwd_iree.torch import LayerNorm

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(make_model(LayerNorm))
        train(model, steps, shard=(rank, world))
        if rank == 0:
            torch.save(model.module.state_dict(), result_path)
    finally:
        torch.distributed.destroy_process_group()
        # Release IREE's device (and its worker threads) now rather than in
        # interpreter teardown.
        from lnbwd_iree import kernels_for

        kernels_for.cache_clear()
        gc.collect()
