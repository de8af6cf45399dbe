"""Models: shapes, units, low-resolution mode, batch-norm record/replay."""

import copy

import pytest
import torch
import torch.nn.functional as F

from golden.training.models import (MODELS, UNIT_DROPPED, SkipConv2d, SkipLinear, build_model)
from training_support import one_thread  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_models_run_at_both_resolutions(name, shape):
    torch.manual_seed(0)
    m = build_model(name, shape, 10)
    x = torch.rand(3, *shape)
    assert m(x).shape == (3, 10)
    m.set_low_res(2)
    assert m(x).shape == (3, 10)
    m.set_low_res(None)
    assert m(x[:0]).shape == (0, 10)  # an empty shard (a rank with no kept row) still runs
    assert not m.droppable[0] and not m.droppable[-1]


def test_droppable_units_and_dropping():
    torch.manual_seed(0)
    mlp = build_model("mlp", (1, 8, 8), 10)
    assert mlp.droppable == [False, True, False]
    resnet = build_model("resnet", (1, 8, 8), 10)
    assert resnet.droppable == [False, True, False, True, False]
    x = torch.rand(2, 1, 8, 8)
    mlp.unit_state[1] = UNIT_DROPPED
    expect = mlp.units["fc3"](mlp.units["fc1"](x))
    assert torch.equal(mlp(x), expect)


def test_low_res_linear_pools_columns_like_pixels():
    torch.manual_seed(0)
    lin = SkipLinear(16, 3, image_shape=(1, 4, 4))
    img = torch.rand(2, 1, 2, 2)
    full = img.repeat_interleave(2, 2).repeat_interleave(2, 3)  # a piecewise-flat 4x4 image
    lin.low_res = 2
    # area gain: a flat 2x2 block gives the same output as at full resolution
    torch.testing.assert_close(lin(img.flatten(1)), F.linear(full.flatten(1), lin.weight, lin.bias))


def test_low_res_conv_kernel_and_shape():
    conv = SkipConv2d(2, 4, 3, padding=1)
    conv.low_res = 2
    x = torch.rand(1, 2, 4, 4)
    y = conv(x)
    assert conv.kernel_used == (2, 2) and y.shape == (1, 4, 4, 4)
    w = F.avg_pool2d(conv.weight, 2, stride=1) * 9 / 4
    torch.testing.assert_close(y, F.conv2d(F.pad(x, (0, 1, 0, 1)), w, conv.bias))
    # stride 2 keeps the output size of the full kernel, so residual branches still add up
    s2 = SkipConv2d(2, 4, 3, stride=2, padding=1)
    full = s2(torch.rand(1, 2, 6, 6)).shape
    s2.low_res = 2
    assert s2(torch.rand(1, 2, 6, 6)).shape == full
    # the full kernel gets the gradient through the pooling
    conv(x).sum().backward()
    assert conv.weight.grad.shape == (4, 2, 3, 3) and conv.weight.grad.abs().sum() > 0


def test_low_res_factor_checked():
    m = build_model("cnn", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="factor 3 must divide the input image size 8x8"):
        m.set_low_res(3)
    with pytest.raises(ValueError, match="kernel_gain must be one of area, none, got 'x'"):
        m.set_low_res(2, kernel_gain="x")


def test_batchnorm_replay_matches_full_batch_when_all_rows_kept():
    torch.manual_seed(0)
    a = build_model("resnet", (1, 8, 8), 10)
    b = copy.deepcopy(a)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    F.cross_entropy(a(x), y).backward()
    b.set_bn_mode("record")
    with torch.no_grad():
        first = b(x)
    b.set_bn_mode("replay")
    out = b(x)
    torch.testing.assert_close(out, first, rtol=0, atol=1e-5)
    F.cross_entropy(out, y).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=n)
    # running statistics moved once (record), not again by the replay
    for ma, mb in zip(a.modules(), b.modules()):
        if isinstance(ma, torch.nn.BatchNorm2d):
            torch.testing.assert_close(mb.running_mean, ma.running_mean)
            assert int(mb.num_batches_tracked) == 1


def test_batchnorm_replay_of_a_subset_reuses_full_batch_activations():
    torch.manual_seed(0)
    m = build_model("resnet", (1, 8, 8), 10)
    x = torch.rand(8, 1, 8, 8)
    m.set_bn_mode("record")
    with torch.no_grad():
        full = m(x)
    m.set_bn_mode("replay")
    torch.testing.assert_close(m(x[[1, 5]]), full[[1, 5]], rtol=0, atol=1e-5)


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'; known: mlp, mlp1, cnn, resnet"):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        build_model("mlp", (1, 8, 8), 10, width=0)
