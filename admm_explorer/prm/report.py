"""Before/after figures of a purify run: parameters, MACs, file size, sparsity, CPU latency."""
from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from collections.abc import Sequence

import torch
from torch import nn

from ..models import layer_macs, prunable_layers


def size_bytes(model: nn.Module) -> int:
    """Bytes of torch.save(model.state_dict(), "model.pt") (zip entries carry the file's stem, so names count)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)


def structure_sparsity(model: nn.Module) -> dict[str, float]:
    """Fractions of all-zero GEMM rows (filters) and columns (C*kh*kw, or linear inputs) over prunable layers."""
    rows = zero_rows = cols = zero_cols = 0
    for m in prunable_layers(model).values():
        nz = m.weight.detach().flatten(1).ne(0)  # (F, C*kh*kw)
        rows += nz.shape[0]
        cols += nz.shape[1]
        zero_rows += int((~nz.any(1)).sum())
        zero_cols += int((~nz.any(0)).sum())
    return {"filter_sparsity": zero_rows / max(rows, 1), "column_sparsity": zero_cols / max(cols, 1)}


@torch.inference_mode()
def latencies_ms(models: Sequence[nn.Module], x: torch.Tensor, runs: int, warmup: int = 2) -> list[float]:
    """Median wall time of one forward pass of each model, in milliseconds, the models timed in turn (run i
    of every model before run i + 1 of any): load on a shared machine falls on all of them alike."""
    for model in models:
        for _ in range(warmup):
            model(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for model, own in zip(models, times):
            start = time.perf_counter()
            model(x)
            own.append(time.perf_counter() - start)
    return [1000 * statistics.median(own) for own in times]


def reports(models: Sequence[nn.Module], input_shape: tuple[int, ...], latency: bool = True,
            runs_b1: int = 20, runs_b64: int = 5) -> list[dict[str, float | int | None]]:
    """report() of each model; their latencies are measured in turn (latencies_ms), so they compare."""
    out = [{"params": sum(p.numel() for p in model.parameters()),
            "macs": sum(layer_macs(model, input_shape).values()),
            "size_bytes": size_bytes(model),
            **structure_sparsity(model),
            "latency_ms_b1": None,
            "latency_ms_b64": None} for model in models]
    if latency:
        cpu = [copy.deepcopy(model).cpu().eval() for model in models]
        for key, batch, runs in (("latency_ms_b1", 1, runs_b1), ("latency_ms_b64", 64, runs_b64)):
            for figures, ms in zip(out, latencies_ms(cpu, torch.randn(batch, *input_shape), runs)):
                figures[key] = ms
    return out


def report(model: nn.Module, input_shape: tuple[int, ...], latency: bool = True,
           runs_b1: int = 20, runs_b64: int = 5) -> dict[str, float | int | None]:
    """params, macs (multiply-accumulates of conv/linear layers, one sample, zeros counted), size_bytes,
    filter/column sparsity, and CPU latency (median, eval mode, current torch thread count) at batch 1 and 64."""
    return reports([model], input_shape, latency, runs_b1, runs_b64)[0]
