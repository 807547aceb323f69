"""The gradient-matching core: distances against hand-computed values, layer selection,
siamese augmentation, and that a matching step lowers the matching loss."""

import math

import pytest
import torch

from exdistill.augment import Augment
from exdistill.errors import ConfigError
from exdistill.methods.matching import (
    DISTANCES,
    LAYERS,
    ClassBatch,
    class_match_loss,
    match_and_backward,
)
from exdistill.models import build_model

# Two "layers": a 2-output weight matrix and a bias (1-D).
SYN = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([1.0, -1.0])]
REAL = [torch.tensor([[1.0, 1.0], [0.0, -2.0]]), torch.tensor([0.0, 1.0])]


def test_mse_distance_by_hand():
    # weight diffs: 0, -1, 0, 4 → 0 + 1 + 0 + 16 = 17; bias diffs: 1, -2 → 1 + 4 = 5
    assert DISTANCES.get("mse")(SYN, REAL).item() == pytest.approx(22.0)


def test_l1_distance_by_hand():
    # |0| + |-1| + |0| + |4| + |1| + |-2| = 8
    assert DISTANCES.get("l1")(SYN, REAL).item() == pytest.approx(8.0)


def test_dc_distance_by_hand():
    # row 0: cos([1,0],[1,1]) = 1/√2; row 1: cos([0,2],[0,-2]) = -1; bias ignored
    expected = (1 - 1 / math.sqrt(2)) + (1 - (-1))
    assert DISTANCES.get("dc")(SYN, REAL).item() == pytest.approx(expected, abs=1e-5)


def test_cos_distance_by_hand():
    s = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, -1.0])
    r = torch.tensor([1.0, 1.0, 0.0, -2.0, 0.0, 1.0])
    expected = 1 - float(s @ r) / float(s.norm() * r.norm())
    assert DISTANCES.get("cos")(SYN, REAL).item() == pytest.approx(expected, abs=1e-5)


def test_distances_are_zero_for_equal_gradients():
    for name in DISTANCES.names():
        assert DISTANCES.get(name)(REAL, REAL).item() == pytest.approx(0.0, abs=1e-5), name


def test_unknown_distance_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown distance"):
        DISTANCES.get("emd")


def _net(seed=0, width=16, classes=4):
    return build_model(
        "convnet", 1, classes, (8, 8), generator=torch.Generator().manual_seed(seed), width=width
    )


def test_layer_selection():
    net = _net()
    conv = LAYERS.get("conv")(net)
    assert conv and all(p.ndim == 4 for p in conv)
    weights = LAYERS.get("weights")(net)
    assert len(weights) == len(conv) + 1  # plus the classifier's weight
    assert len(LAYERS.get("all")(net)) == len(list(net.parameters()))


def test_siamese_augmentation_is_identical_on_both_batches():
    aug = Augment("color_crop_cutout_flip_scale_rotate", mode="all")
    x = torch.randn(4, 1, 8, 8)
    a, b = aug.siamese([x, x.clone()[:2]], torch.Generator().manual_seed(3))
    assert torch.equal(a[:2], b)


def _batches(syn, real):
    return lambda chunk: [ClassBatch(c, real[c], syn[c]) for c in chunk]


@pytest.mark.parametrize("distance", ["l1", "mse", "dc"])
def test_one_matching_step_lowers_the_loss_on_a_fixed_network(distance):
    g = torch.Generator().manual_seed(0)
    net = _net()
    params = LAYERS.get("conv")(net)
    real = torch.randn(3, 16, 1, 8, 8, generator=g)
    syn = torch.randn(3, 4, 1, 8, 8, generator=g).requires_grad_(True)
    dist = DISTANCES.get(distance)
    before = match_and_backward(net, params, dist, _batches(syn, real), [0, 1, 2], None, g)
    with torch.no_grad():  # a small step along the negative gradient (norm 0.05)
        syn -= 0.05 * syn.grad / syn.grad.norm()
    syn.grad = None
    after = match_and_backward(net, params, dist, _batches(syn, real), [0, 1, 2], None, g)
    assert after < before


def test_chunked_backward_equals_all_at_once():
    g = torch.Generator().manual_seed(1)
    net = _net()
    params = LAYERS.get("conv")(net)
    real = torch.randn(4, 8, 1, 8, 8, generator=g)
    syn0 = torch.randn(4, 2, 1, 8, 8, generator=g)
    grads = []
    for chunk in (0, 1, 3):
        syn = syn0.clone().requires_grad_(True)
        loss = match_and_backward(
            net,
            params,
            DISTANCES.get("l1"),
            _batches(syn, real),
            range(4),
            None,
            g,
            class_chunk=chunk,
        )
        grads.append((loss, syn.grad.clone()))
    for loss, grad in grads[1:]:
        assert loss == pytest.approx(grads[0][0], rel=1e-5)
        torch.testing.assert_close(grad, grads[0][1], rtol=1e-4, atol=1e-6)


def test_class_match_loss_weight_scales_the_term():
    g = torch.Generator().manual_seed(2)
    net = _net()
    params = LAYERS.get("conv")(net)
    real, syn = torch.randn(8, 1, 8, 8), torch.randn(2, 1, 8, 8)
    one = class_match_loss(net, params, DISTANCES.get("mse"), ClassBatch(1, real, syn), None, g)
    half = class_match_loss(
        net, params, DISTANCES.get("mse"), ClassBatch(1, real, syn, 0.5), None, g
    )
    assert half.item() == pytest.approx(0.5 * one.item(), rel=1e-5)
