"""Micro-benchmark behind the channels-last lever: one SGD step of the study's CNN.

Times a training step (forward, cross-entropy, backward, SGD with momentum) on a batch
of random 224x224 images, back to back in one process, in four variants: NCHW and
channels-last memory, each plain and under ``torch.compile``. The best of the repeats
after the first is reported; the first (which includes compiling) separately.

    python -m benchmarks.micro.cnn_step [--batch 64] [--size 224] [--repeats 6] [--no-compile] [--threads N]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from benchmarks.measure import call_seconds
from pytorch_impl.cnn import build_model


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(first step, best later step) in seconds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    times = call_seconds(step, repeats)
    return times[0], min(times[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice, one per core)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8).float()
    labels = torch.randint(0, 3, (args.batch,))
    variants = [("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)]
    variants = [(name, fmt, False) for name, fmt in variants]
    variants += [] if args.no_compile else [(f"{name}+compile", fmt, True) for name, fmt, _ in variants]
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch, "size": args.size}
    for name, fmt, compiled in variants:
        torch.manual_seed(0)
        model = build_model(3, args.size).to(memory_format=fmt).train()
        x = pixels.contiguous(memory_format=fmt)
        first, best = step_seconds(torch.compile(model) if compiled else model, x, labels, args.repeats)
        results[name] = {"first_s": round(first, 4), "best_s": round(best, 4)}
        print(f"{name:24s} first {first:7.3f} s   best {best:6.3f} s", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
