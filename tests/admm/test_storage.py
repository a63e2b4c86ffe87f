"""Storage report: bit counts of each coding worked out by hand, the cheapest one chosen."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from admm_explorer.admm.storage import gaps_of, model_storage, relative_index_entries, tensor_storage, value_cost
from admm_explorer.models import build_model


def test_value_cost_prefers_a_codebook_only_when_it_is_smaller():
    assert value_cost(0, 0) == (0, 0)
    assert value_cost(100, 2) == (1, 64)  # 100 one-bit indices + two float32 levels
    assert value_cost(100, 7) == (3, 224)
    assert value_cost(3, 3) == (32, 0)  # 3 * 2 + 96 > 96: raw floats
    assert value_cost(1000, 1000) == (32, 0)


def test_relative_index_counts_filler_entries():
    positions = torch.tensor([0, 3, 20, 21])  # gaps from -1: 1, 3, 17, 1
    assert relative_index_entries(gaps_of(positions), 2) == 1 + 1 + 5 + 1  # ceil(17 / 4) = 5
    assert relative_index_entries(gaps_of(positions), 4) == 1 + 1 + 2 + 1
    assert relative_index_entries(gaps_of(positions), 5) == 4
    assert relative_index_entries(gaps_of([]), 3) == 0


def test_dense_float_tensor_costs_32_bits_a_weight():
    w = torch.randn(10, 10)
    s = tensor_storage(w)
    assert s == {"weights": 100, "nonzero": 100, "distinct": 100, "value_bits": 32, "positions": "dense",
                 "bits": 3200}


def test_binary_dense_tensor_is_one_bit_a_weight_plus_its_two_levels():
    w = torch.where(torch.randn(1000) > 0, 0.3, -0.3)
    s = tensor_storage(w)
    assert (s["positions"], s["value_bits"], s["distinct"], s["bits"]) == ("dense", 1, 2, 1000 + 64)


def test_sparse_tensor_picks_the_cheapest_position_coding():
    # 1000 weights, 10 nonzeros every 100: gaps 1, 100, 100, ...; float values
    w = torch.zeros(1000)
    w[::100] = torch.arange(1.0, 11.0)
    s = tensor_storage(w)
    bitmap = 1000 + 10 * 32
    best_relative = min(relative_index_entries(gaps_of(torch.arange(0, 1000, 100)), g) * (g + 32) for g in range(1, 11))
    assert best_relative < bitmap
    assert s["bits"] == best_relative and s["positions"] == "relative7"  # 2^7 = 128 >= 100: no fillers
    assert s["bits"] == 10 * (7 + 32)
    # every other weight nonzero, 3 levels: gaps of 2 cost one 1-bit entry each
    w = torch.tensor([0.5, 0.0, -0.5, 0.0, 1.0, 0.0] * 100)
    s = tensor_storage(w)
    assert s["positions"] == "relative1" and s["bits"] == 300 * (1 + 2) + 3 * 32
    # half the weights nonzero at random, float values: a bitmap beats every relative index
    torch.manual_seed(0)
    w = torch.randn(2000) * (torch.rand(2000) < 0.5)
    nz = torch.nonzero(w).squeeze(1)
    s = tensor_storage(w)
    assert s["positions"] == "bitmap" and s["bits"] == 2000 + nz.numel() * 32
    assert all(relative_index_entries(gaps_of(nz), g) * (g + 32) > s["bits"] for g in range(1, 12))
    assert tensor_storage(torch.zeros(7))["bits"] == 0


def test_fillers_add_a_zero_level_to_the_codebook():
    w = torch.zeros(64)
    w[[0, 40]] = torch.tensor([1.0, -1.0])  # gaps 1 and 40
    s = tensor_storage(w)
    # g = 5: 1 + 2 entries (one filler), 3 values {1, -1, 0} -> 2-bit codes + 96 bits codebook
    options = {g: relative_index_entries(gaps_of(torch.tensor([0, 40])), g) for g in range(1, 7)}
    assert options[5] == 3 and options[6] == 2
    costs = {g: e * g + min(e * 32, e * max(1, math.ceil(math.log2(2 + (e > 2)))) + 32 * (2 + (e > 2)))
             for g, e in options.items()}
    assert s["bits"] == min(min(costs.values()), 64 + 2 * 32)
    assert s["positions"] == "relative6" and s["bits"] == 2 * 6 + 2 * 32  # 2 entries: floats beat a codebook
    # 1% of 400,000 weights at random, ternary: 8-bit gaps need a few fillers, so a third code (2 bits)
    torch.manual_seed(0)
    w = torch.where(torch.rand(400_000) < 0.5, 0.1, -0.1) * (torch.rand(400_000) < 0.01)
    nz = torch.nonzero(w).squeeze(1)
    s = tensor_storage(w)
    entries = relative_index_entries(gaps_of(nz), 8)
    assert s["positions"] == "relative8" and entries > nz.numel()
    assert s["value_bits"] == 2 and s["bits"] == entries * (8 + 2) + 3 * 32


def test_model_storage_counts_everything_else_dense():
    model = build_model("lenet5")
    dense = model_storage(model)
    params = sum(p.numel() for p in model.parameters())
    assert dense["dense_bytes"] == params * 4 and dense["compressed_bytes"] == params * 4
    assert dense["ratio"] == 1.0 and dense["bits_per_weight"] == 32
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.where(m.weight >= 0, 0.1, -0.1))
    binary = model_storage(model)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert binary["other_params"] == params - weights
    assert binary["compressed_bytes"] == math.ceil((weights + 4 * 64 + 32 * (params - weights)) / 8)
    assert binary["bits_per_weight"] == pytest.approx((weights + 4 * 64) / weights)
