"""The training loop reads its figures from the device every log_every batches, trains in the recipe's
precision and memory format, and keeps the ADMM math and the masks exact whatever those are."""
import pytest
import torch

from admm_explorer.engine import Session
from admm_explorer.engine.stages.dense import PretrainSpec
from admm_explorer.engine.stages.pruning import AdmmSpec, RetrainSpec
from admm_explorer.errors import StageFailed
from admm_explorer.recipe import parse_recipe


def admm_then_retrain(start, **setup):
    session = Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(start), **setup}))
    events = []
    session.subscribe(events.append)
    session.run_stage(AdmmSpec(epochs=0.5, update_every=0.25, eval_every=0.25, targets={"*": 0.8}))
    session.run_stage(RetrainSpec(epochs=0.25))
    return session, [{k: v for k, v in e.as_dict().items() if k not in ("time", "seconds")} for e in events]


def test_log_every_changes_when_figures_are_read_not_what_they_are(pretrained):
    every, every_events = admm_then_retrain(pretrained)  # the CPU default: every batch
    assert every.log_every == 1
    batched, batched_events = admm_then_retrain(pretrained, log_every=7)
    assert batched.log_every == 7
    for (k, a), b in zip(every.model.state_dict().items(), batched.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert batched_events == every_events  # one batch_ended per batch, in the same order among the rounds
    kinds = [e["kind"] for e in every_events]
    assert kinds.count("batch_ended") == 32 + 16 and kinds.count("admm_round") == 2


def test_a_nan_found_at_a_read_fails_the_stage_and_restores_the_weights(pretrained):
    session = Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(pretrained), "log_every": 5}))
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    batches = []
    session.subscribe(lambda e: batches.append(e.step) if e.kind == "batch_ended" else None)
    steps = []
    real_step = torch.optim.SGD.step
    session.subscribe(lambda e: steps.clear() if e.kind == "stage_started" else None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", lambda self, *a: (steps.append(1), real_step(self, *a))[1])
        with pytest.raises(StageFailed, match=r"the loss became (nan|inf) at epoch 1, batch (\d+); stopped") as failed:
            session.run_stage(PretrainSpec(epochs=1, optimizer={"name": "sgd", "lr": 1e12}))
    bad = int(failed.value.args[0].split("batch ")[1].split(";")[0])
    assert batches == list(range(1, bad))  # every batch before the bad one was reported, in order
    assert len(steps) == 4  # read before the 5th step: the steps after the bad batch were taken, then undone
    for k, v in session.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rollback_copy_is_in_host_memory(pretrained, monkeypatch):
    session = Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(pretrained)}))
    copies = []
    real = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and args[0] == "cpu" and kwargs.get("copy"):
            copies.append(self.shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    session.run_stage(PretrainSpec(epochs=0.05))
    assert len(copies) == len(session.model.state_dict())


@pytest.fixture(scope="module")
def bf16_channels_last():
    """ResNet-20 (BatchNorm, 1x1 shortcuts) pruned by filter with bf16 autocast and NHWC weights."""
    import admm_explorer.engine.stages.pruning as pruning

    built = []

    class Recorded(pruning.ADMM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    session = Session(parse_recipe({"model": "resnet20", "dataset": "fake", "fake_size": 64, "batch_size": 16,
                                    "device": "cpu", "precision": "bf16", "channels_last": True}))
    original, pruning.ADMM = pruning.ADMM, Recorded
    try:
        session.run_stage(PretrainSpec(epochs=1))
        session.run_stage(AdmmSpec(epochs=1, update_every=0.5, targets={
            "*": {"sparsity": 0.5, "structure": "filter"}, "fc": {"sparsity": 0.5, "structure": "column"}}))
        session.run_stage(RetrainSpec(epochs=1))
    finally:
        pruning.ADMM = original
    return session, built[0]


def test_bf16_channels_last_keep_weights_and_admm_in_float32(bf16_channels_last):
    session, admm = bf16_channels_last
    assert all(p.dtype == torch.float32 for p in session.model.parameters())
    assert all(layer.z.dtype == layer.u.dtype == torch.float32 for layer in admm.layers.values())
    assert admm.penalty().dtype == torch.float32
    conv = session.model.get_submodule("conv1").weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_bf16_channels_last_masks_are_exact(bf16_channels_last):
    session, _ = bf16_channels_last
    layers = session.prunable()
    assert set(session.masks) == set(layers)
    for name, mask in session.masks.items():
        w = layers[name].weight
        assert torch.all(w[~mask] == 0), name
        if name != "fc":  # half of the filters kept, whole ones
            kept_rows = mask.flatten(1).any(1)
            assert int(kept_rows.sum()) == w.shape[0] - round(0.5 * w.shape[0]), name
            assert torch.equal(mask.flatten(1)[kept_rows].all(1), torch.ones_like(kept_rows[kept_rows]))
    bn = session.model.get_submodule("bn1")
    pruned = ~session.masks["conv1"].flatten(1).any(1)
    assert torch.all(bn.weight[pruned] == 0) and torch.all(bn.bias[pruned] == 0)


def test_fp16_trains_with_a_grad_scaler_and_exact_masks(pretrained):
    session = Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(pretrained), "precision": "fp16"}))
    start = session.evaluate()[1]
    session.run_stage(AdmmSpec(epochs=0.5, update_every=0.25, targets={"*": 0.8}))
    session.run_stage(RetrainSpec(epochs=0.5))
    accuracy = session.evaluate()[1]
    assert accuracy > 0.8 and accuracy > start - 0.05
    for name, mask in session.masks.items():
        w = session.prunable()[name].weight
        assert torch.all(w[~mask] == 0) and int(mask.sum()) == w.numel() - round(0.8 * w.numel()), name
