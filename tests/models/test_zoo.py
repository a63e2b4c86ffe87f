import pytest
import torch
import torchvision

from admm_explorer.models import MODELS, UnknownName, build_model, get_model_spec, layer_macs, prunable_layers

# (parameters, prunable weights) of each builder
COUNTS = {
    "lenet5": (431_080, 430_500),
    "lenet300": (266_610, 266_200),
    "resnet20": (272_474, 270_896),
    "resnet32": (466_906, 464_432),
    "resnet56": (855_770, 851_504),
    "resnet18-cifar": (11_173_962, 11_164_352),
    "vgg16-cifar": (14_728_266, 14_715_584),
    "mobilenetv2-cifar": (2_237_770, 2_203_584),
    "resnet18": (11_689_512, 11_678_912),
    "resnet50": (25_557_032, 25_502_912),
    "alexnet": (61_100_840, 61_090_496),
    "vgg16": (138_357_544, 138_344_128),
    "mobilenet_v2": (3_504_872, 3_469_760),
}


def test_every_model_is_counted():
    assert set(MODELS) == set(COUNTS)


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts(name):
    model = build_model(name)
    params, weights = COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(m.weight.numel() for m in prunable_layers(model).values()) == weights


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.input_shape[1] <= 32])
def test_small_models_fit_their_input(name):
    spec = get_model_spec(name)
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *spec.input_shape))
    assert out.shape == (2, spec.num_classes)


def test_lenet5_is_the_caffe_network():
    model = build_model("lenet5")
    layers = prunable_layers(model)
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert [tuple(m.weight.shape) for m in layers.values()] == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
    # MACs by hand: output elements x weights per output
    assert layer_macs(model, (1, 28, 28)) == {"conv1": 24 * 24 * 20 * 25, "conv2": 8 * 8 * 50 * 500,
                                              "fc1": 500 * 800, "fc2": 10 * 500}


def test_cifar_resnet_depth():
    convs = [n for n, m in prunable_layers(build_model("resnet56")).items() if "shortcut" not in n]
    assert len(convs) == 56  # 55 convs + the classifier


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownName, match="did you mean.*lenet5"):
        get_model_spec("lenet-5")


def test_pretrained_only_where_available():
    with pytest.raises(ValueError, match="no pretrained"):
        build_model("lenet5", pretrained=True)


def test_torch_and_torchvision_match():
    # torchvision's compiled ops only load against the torch they were built for
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
