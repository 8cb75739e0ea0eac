"""Model profiles: parameter counts, multiply-adds and a per-layer table (paper 003, Table 1 form).

The papers' "FLOPs" are multiply-adds (paper 002: 138.98 M at 48x48), so ``count_macs`` reports MACs:
torch's FLOP counter counts a multiply-add as two FLOPs, and only convolutions and matrix products
(as thop and torchinfo do), not normalisation, activations or pooling.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

BYTES_PER_FLOAT = 4
MB = 2**20


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (what papers and torchsummary report)."""
    return sum(p.numel() for p in model.parameters())


def dummy_input(model: nn.Module, input_size: int, in_chans: int, batch: int = 1) -> torch.Tensor:
    """A zero batch on the model's device, square ``input_size``."""
    device = next(model.parameters()).device
    return torch.zeros(batch, in_chans, input_size, input_size, device=device)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int, in_chans: int) -> int:
    """Multiply-adds of one image's forward pass in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(dummy_input(model, input_size, in_chans))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def operator_name(model: nn.Module, name: str) -> str:
    """The child's name as the paper's table spells it (a model's ``paper_names``), else its class name."""
    return getattr(model, "paper_names", {}).get(name, type(getattr(model, name)).__name__)


def _numel(output: object) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel()
    if isinstance(output, list | tuple):
        return sum(_numel(o) for o in output)
    return 0


def _shape(t: object) -> list[int] | str:
    return list(t.shape[1:]) if isinstance(t, torch.Tensor) else type(t).__name__


def _trace(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, tuple]:
    """(input, output) of each given module's first call, in call order."""
    seen: dict[str, tuple] = {}

    def hook(name: str):
        def record(_mod: nn.Module, args: tuple, output: object) -> None:
            if name not in seen:
                seen[name] = (args[0] if args else None, output)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def forward_backward_mb(model: nn.Module, input_size: int, in_chans: int) -> float:
    """torchsummary's "Forward/backward pass size (MB)": twice the outputs of every leaf module, float32."""
    leaves = {n: m for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    model.eval()
    seen = _trace(model, dummy_input(model, input_size, in_chans), leaves)
    return 2 * sum(_numel(out) for _, out in seen.values()) * BYTES_PER_FLOAT / MB


@torch.no_grad()
def layer_table(model: nn.Module, input_size: int, in_chans: int) -> pd.DataFrame:
    """One row per top-level module, in call order: Input, Operator, Param #, Output, Layer, Fwd/bwd MB.

    Columns as paper 003's Table 1 (Input is the shape entering the layer). ``attrs`` hold the totals:
    ``total_params`` and torchsummary's ``forward_backward_mb`` over all leaf modules.
    """
    was_training = model.training
    model.eval()
    try:
        children = dict(model.named_children())
        seen = _trace(model, dummy_input(model, input_size, in_chans), children)
        rows = [
            {
                "Input": _shape(inp),
                "Operator": operator_name(model, name),
                "Param #": count_parameters(children[name]),
                "Output": _shape(out),
                "Layer": name,
                "Fwd/bwd MB": round(2 * _numel(out) * BYTES_PER_FLOAT / MB, 4),
            }
            for name, (inp, out) in seen.items()
        ]
        frame = pd.DataFrame(rows, columns=["Input", "Operator", "Param #", "Output", "Layer", "Fwd/bwd MB"])
        frame.attrs["total_params"] = count_parameters(model)
        frame.attrs["forward_backward_mb"] = forward_backward_mb(model, input_size, in_chans)
    finally:
        model.train(was_training)
    return frame


def describe(model: nn.Module, input_size: int, in_chans: int) -> dict[str, float]:
    """Parameters (M), multiply-adds (M) and size in KB (float32), the figures the papers compare."""
    params = count_parameters(model)
    return {
        "params_m": params / 1e6,
        "macs_m": count_macs(model, input_size, in_chans) / 1e6,
        "size_kb": math.ceil(params * BYTES_PER_FLOAT / 1024),
    }


def device_name(device: torch.device | str) -> str:
    """What a speed was measured on: ``cuda:0 (NVIDIA H200)`` or ``cpu (2 threads)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def frames_per_second(
    model: nn.Module,
    input_size: int,
    in_chans: int,
    device: str | torch.device | None = None,
    seconds: float = 2.0,
    batch: int = 1,
    warmup: int = 5,
    min_iterations: int = 20,
) -> float:
    """Images per second of ``model``'s forward in eval mode at ``batch`` (the papers' "frame rate").

    ``warmup`` passes first (allocator, cuDNN and lazy init), untimed; then at least ``min_iterations`` passes and
    ``seconds`` of them, with the device synchronised before the clock starts and stops. ``device`` defaults to
    where the model already is (a trained model is timed where it ran). Restores the model's train/eval mode.
    """
    import time

    if device is not None:
        model = model.to(device)
    was_training = model.training
    model.eval()
    x = dummy_input(model, input_size, in_chans, batch)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            sync()
            count, started = 0, time.perf_counter()
            while count < min_iterations or time.perf_counter() - started < seconds:
                model(x)
                count += 1
            sync()
            elapsed = time.perf_counter() - started
    finally:
        model.train(was_training)
    return count * batch / elapsed


def inference_speed(
    model: nn.Module, input_size: int, in_chans: int, device: torch.device | str, seconds: float = 1.0
) -> dict[str, float | str]:
    """A trained model's batch-1 frame rate on ``device`` (the run's), and which device: the ``fps_*`` columns.

    The model goes back to where it was (Lightning leaves a tested model on the CPU).
    """
    home = next(model.parameters()).device
    try:
        fps = frames_per_second(model, input_size, in_chans, device, seconds=seconds)
    finally:
        model.to(home)
    return {"fps_batch1": round(fps, 1), "fps_device": device_name(device)}


def profile_report(model: nn.Module, input_size: int, in_chans: int, device: str = "cpu") -> dict[str, float]:
    """Everything ``ferbench profile`` prints for one model."""
    report = describe(model, input_size, in_chans)
    report["forward_backward_mb"] = forward_backward_mb(model, input_size, in_chans)
    report["fps_batch1"] = frames_per_second(model, input_size, in_chans, device)
    return report
