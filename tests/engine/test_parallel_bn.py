"""The CPU's cross-rank BatchNorm against torch's BatchNorm2d, in a process group of one (gloo): outputs,
running statistics and gradients, also where the mean is large beside the spread (a sum of squares would
cancel there). Two ranks against one process: test_distributed."""
import socket

import pytest
import torch

from admm_explorer.errors import RecipeError
from admm_explorer.parallel import World, cross_rank_batch_norm


@pytest.fixture(scope="module")
def group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield World(0, 1, 0)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("offset, momentum", [(0.0, 0.1), (1000.0, 0.1), (3.0, None)])
def test_cross_rank_batch_norm_is_batch_norm(group, offset, momentum):
    torch.manual_seed(0)
    ours, reference = torch.nn.BatchNorm2d(6, momentum=momentum), torch.nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        for bn in (ours, reference):
            bn.weight.copy_(torch.linspace(0.5, 2, 6))
            bn.bias.copy_(torch.linspace(-1, 1, 6))
    tolerance = 1e-5 * max(offset, 1.0)
    for _ in range(5):
        x = (torch.randn(8, 6, 4, 4) + offset).requires_grad_()
        mine, theirs = cross_rank_batch_norm(ours, x, group), reference(x)
        assert torch.allclose(mine, theirs, atol=tolerance * 10)
        weights = torch.randn_like(theirs)
        g_mine = torch.autograd.grad((mine * weights).sum(), (x, ours.weight, ours.bias))
        g_theirs = torch.autograd.grad((theirs * weights).sum(), (x, reference.weight, reference.bias))
        for a, b in zip(g_mine, g_theirs):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, offset / 20))  # x̂ carries offset x 1e-7
    assert torch.allclose(ours.running_mean, reference.running_mean, atol=tolerance)
    assert torch.allclose(ours.running_var, reference.running_var, rtol=1e-5, atol=1e-6)
    assert int(ours.num_batches_tracked) == int(reference.num_batches_tracked) == 5


def test_a_batch_smaller_than_the_world_is_refused_before_any_work():
    from admm_explorer.engine import Session
    from admm_explorer.recipe import parse_recipe

    with pytest.raises(RecipeError, match="batch_size = 2, test_batch_size = 1000: each of the 4 processes"):
        Session(parse_recipe({"device": "cpu", "batch_size": 2}), world=World(0, 4, 0))
