"""MAC counts on known tiny networks, by hand."""

import torch

from golden.training.counting import MacMeter, gemm_macs
from golden.training.models import build_model
from training_support import one_thread  # noqa: F401 (autouse fixture)

F_, B_, G_, U_, R_ = range(5)


def tiny_mlp():
    torch.manual_seed(0)
    return build_model("mlp", (1, 2, 2), 2, width=3)  # 4 -> 3 -> 3 -> 2


def by_layer(meter, row):
    return {n: tuple(int(v) for v in row[i]) for i, n in enumerate(meter.names)}


def test_mlp_full_step_by_hand():
    m = tiny_mlp()
    meter = MacMeter(m)
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 0, 1, 1])
    meter.begin_step(5)
    meter.phase = "F"
    loss = torch.nn.functional.cross_entropy(m(x), y)
    meter.phase = None
    loss.backward()
    meter.count_update()
    got = by_layer(meter, meter.end_step())
    # F = rows x in x out; B skipped for fc1 (its input is the data); U = weights + biases
    assert got == {"fc1.linear": (5 * 4 * 3, 0, 5 * 4 * 3, 12 + 3, 0),
                   "fc2.linear": (5 * 3 * 3, 5 * 3 * 3, 5 * 3 * 3, 9 + 3, 0),
                   "fc3.linear": (5 * 3 * 2, 5 * 3 * 2, 5 * 3 * 2, 6 + 2, 0)}
    ref = meter.reference()
    assert ref.f.tolist() == [12, 9, 6] and ref.needs_input_grad.tolist() == [False, True, True]
    assert ref.per_step(5).tolist() == [[60, 0, 60, 15], [45, 45, 45, 12], [30, 30, 30, 8]]


def test_mlp_kept_rows_and_frozen_weights_by_hand():
    m = tiny_mlp()
    meter = MacMeter(m)
    x = torch.rand(5, 1, 2, 2)
    meter.begin_step(5)
    meter.phase = "F"
    with torch.no_grad():
        m(x)
    # two kept rows run again with a graph (R); fc2's weight frozen: no G there, and fc1 gets
    # no B anyway; fc2 still back-propagates to fc1 because fc1 trains
    m.units["fc2"].linear.weight.requires_grad_(False)
    meter.phase = "R"
    out = m(x[[0, 3]])
    meter.phase = None
    out.sum().backward()
    meter.count_update()
    got = by_layer(meter, meter.end_step())
    assert got == {"fc1.linear": (60, 0, 2 * 12, 15, 2 * 12),
                   "fc2.linear": (45, 2 * 9, 0, 3, 2 * 9),
                   "fc3.linear": (30, 2 * 6, 2 * 6, 8, 2 * 6)}


def test_cnn_conv_counts_and_pooled_kernels_by_hand():
    torch.manual_seed(0)
    m = build_model("cnn", (1, 4, 4), 3, width=2)  # conv 1->2, 2->4 (+pool), 4->4, fc 4->3
    meter = MacMeter(m)
    full = meter.reference()
    # output elements x in_channels x kernel area
    assert full.f.tolist() == [2 * 16 * 1 * 9, 4 * 16 * 2 * 9, 4 * 4 * 4 * 9, 4 * 3]
    low = meter.reference(2)  # 2x2 input, 2x2 kernels, maps 2x2 then 1x1 after the pool
    assert low.f.tolist() == [2 * 4 * 1 * 4, 4 * 4 * 2 * 4, 4 * 1 * 4 * 4, 4 * 3]
    assert m.low_res is None  # reference() leaves the model as it was


def test_resnet_first_layer_only_has_no_input_gradient():
    torch.manual_seed(0)
    m = build_model("resnet", (1, 8, 8), 10)
    meter = MacMeter(m)
    ref = meter.reference()
    names = [n for n, g in zip(meter.names, meter.is_gemm) if g]
    needs = [bool(v) for v, g in zip(ref.needs_input_grad, meter.is_gemm) if g]
    assert names[0] == "stem.conv" and needs == [False] + [True] * (len(names) - 1)
    # batch norm layers: U only
    bn = meter.names.index("stem.bn")
    assert ref.f[bn] == 0 and ref.params[bn] == 2 * 16


def test_gemm_macs_formula():
    lin = torch.nn.Linear(7, 5)
    x = torch.rand(2, 3, 7)
    assert gemm_macs(lin, x, lin(x)) == 6 * 7 * 5
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = torch.rand(2, 4, 5, 5)
    assert gemm_macs(conv, x, conv(x)) == 2 * 6 * 25 * 2 * 9
