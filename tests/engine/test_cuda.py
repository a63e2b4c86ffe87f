"""On a CUDA GPU (skipped elsewhere; benchmarks/gpu_check.py runs this module): data on the device, the
hot loop's few reads, bf16 with exact masks. (The rollback copy's place in host memory is tested on the
CPU, test_hot_loop; gpu_check.py reports peak GPU memory.)"""
import pytest
import torch

from admm_explorer.engine import Session
from admm_explorer.engine.stages.dense import PretrainSpec
from admm_explorer.engine.stages.pruning import AdmmSpec, RetrainSpec
from admm_explorer.recipe import parse_recipe

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def session(**setup) -> Session:
    return Session(parse_recipe({"device": "cuda", "seed": 0, **setup}))


def test_tensor_datasets_live_on_the_gpu():
    s = session()
    x, y = next(iter(s.data.train_batches(1)))
    assert x.device.type == y.device.type == "cuda" and s.log_every == 25


def test_the_hot_loop_reads_the_device_once_per_log_every_batches():
    s = session(log_every=25)
    s.run_stage(PretrainSpec(epochs=0.1))  # warm-up: kernels, allocator
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as caught:
            s.run_stage(PretrainSpec(epochs=50 / 63, eval_every=1000))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    # 50 batches at three reads each would be 150; the reads, the epoch's order upload and the closing
    # evaluation stay far below
    assert len(syncs) < 40, [str(w.message) for w in syncs[:5]]


def test_bf16_channels_last_on_the_gpu_keeps_masks_exact():
    s = session(model="resnet20", dataset="fake", fake_size=256, batch_size=64, precision="bf16", channels_last=True)
    s.run_stage(PretrainSpec(epochs=1))
    s.run_stage(AdmmSpec(epochs=1, update_every=0.5, targets={"*": {"sparsity": 0.5, "structure": "filter"},
                                                                "fc": {"sparsity": 0.5, "structure": "column"}}))
    s.run_stage(RetrainSpec(epochs=1))
    for name, mask in s.masks.items():
        w = s.prunable()[name].weight
        assert w.dtype == torch.float32 and torch.all(w[~mask] == 0), name
