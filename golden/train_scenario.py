"""Programs of the training hardware with their data: epilogues, the loss unit, their errors.

Like :mod:`golden.scenario` (whose :class:`~golden.scenario.Scenario` they build), for every
tier: random GEMMs with the RELU, MASK and UPDATE epilogues over aux contents aimed at the
edges (zero and the signs for MASK, master weights at the accumulator's limits for UPDATE, so
both saturations happen), LOSS commands over logits aimed at the loss unit's edges (ties for
the maximum, equal columns, the operand extremes whose differences run past the exp table, a
difference exactly at the table's end, ragged groups of samples), and one program per error
the training commands add.
"""

from __future__ import annotations

import dataclasses
import random

import torch

from skiptrain import numerics
from skiptrain.config import Config
from skiptrain.isa import Command, Epilogue, ErrorCode, Gate, OutMode, Phase
from skiptrain.layout import Region
from skiptrain.skip import (CONF_TAU_WIDTH, BatchPolicy, ConfMode, SamplePolicy, SkipCtrl, batch_tau_width,
                            tcp_bound)

from .loss_unit import exp_lookup, softmax_parts, tables
from .scenario import Scenario, _Allocator, random_matrix


def _aux_values(rows: int, cols: int, epilogue: int, cfg: Config, rng: random.Random):
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    lo, hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
    if epilogue == Epilogue.MASK:
        # the sign test: zero, +-1 and the extremes beside ordinary values
        choices = torch.tensor([0, 0, 1, -1, lo, hi, cfg.data_max, cfg.data_min])
        pick = choices[torch.randint(len(choices), (rows, cols), generator=g)]
        plain = torch.randint(cfg.data_min, cfg.data_max + 1, (rows, cols), generator=g)
        return torch.where(torch.rand((rows, cols), generator=g) < 0.5, pick, plain)
    # UPDATE: master weights anywhere in acc_width bits, some at the limits (the subtraction
    # saturates) and some whose operand copy leaves the operand range (the copy saturates)
    big = 1 << (cfg.data_width - 1 + cfg.frac_bits)
    choices = torch.tensor([lo, hi, lo + 1, hi - 1, big, -big - 1, big - 1, -big, 0])
    pick = choices[torch.randint(len(choices), (rows, cols), generator=g)]
    span = 1 << (cfg.data_width + cfg.frac_bits)
    plain = torch.randint(-span, span, (rows, cols), generator=g)
    return torch.where(torch.rand((rows, cols), generator=g) < 0.4, pick, plain)


def epilogue_scenario(cfg: Config, seed: int, n_commands: int = 3, max_dim: int = 10) -> Scenario:
    """Back-to-back QUANT GEMMs with random epilogues over edge-aimed aux contents, random
    shifts and LR_SHIFT, transposes and strides."""
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    accm = _Allocator(cfg.acc_depth, rng)
    sc = Scenario(cfg, name=f"epilogues(seed={seed})", lr_shift=rng.choice([0, 0, 1, 3]),
                  stochastic=seed % 2 == 1, sr_seed=rng.getrandbits(32))
    for n in range(n_commands):
        pick = lambda: rng.choice([1, rng.randint(1, max_dim), rng.randint(1, max_dim)])
        M, K, N = pick(), pick(), pick()
        ta, tb = rng.random() < 0.5, rng.random() < 0.5
        epi = list(Epilogue)[(seed + n) % len(Epilogue)]  # every epilogue within a few seeds
        a_shape = (K, M) if ta else (M, K)
        b_shape = (N, K) if tb else (K, N)
        A = spad.region(*a_shape, V, slack=True)
        B = spad.region(*b_shape, V, slack=True)
        Cr = spad.region(M, N, V, slack=True)
        aux = accm.region(M, N, V, slack=False) if Cr is not None else None
        if aux is not None:
            aux = Region(aux.base, M, N, Cr.ld)
            accm.next = max(accm.next, aux.end(V))
            if aux.end(V) > cfg.acc_depth:
                aux = None
        if None in (A, B, Cr, aux):
            raise ValueError(f"epilogue scenario seed={seed}: command {n} ({M}x{K}x{N}) does not "
                             "fit the memories of this config; use fewer or smaller commands")
        # extreme operands make accumulators whose low bits are nearly all 0 or 1, which hide
        # the rounding noise: a stochastic UPDATE gets ordinary ones
        extreme = rng.random() < 0.3 and not (sc.stochastic and epi == Epilogue.UPDATE)
        sc.inputs.append(("spad", A, random_matrix(*a_shape, cfg, rng, extreme)))
        sc.inputs.append(("spad", B, random_matrix(*b_shape, cfg, rng, extreme)))
        if epi in (Epilogue.MASK, Epilogue.UPDATE):
            sc.inputs.append(("acc", aux, _aux_values(M, N, epi, cfg, rng)))
        limit = cfg.acc_width - 1 - (sc.lr_shift if epi == Epilogue.UPDATE else 0)
        shift = rng.choice([0, cfg.frac_bits, rng.randint(0, limit)])
        sc.commands.append(Command.gemm(M, K, N, A, B, Cr, trans_a=ta, trans_b=tb, shift=shift,
                                        phase=rng.choice(list(Phase)), epilogue=epi,
                                        aux=aux if epi != Epilogue.NONE else None))
        sc.outputs.append(("spad", Cr))
        if epi != Epilogue.NONE:
            sc.outputs.append(("acc", aux))
    sc.commands.append(Command())
    return sc


def _logits(M: int, N: int, cfg: Config, rng: random.Random) -> torch.Tensor:
    """Columns of every kind the loss unit must get right."""
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    z = torch.randint(cfg.data_min, cfg.data_max + 1, (M, N), generator=g)
    table_end = numerics.exp_table_size(cfg.frac_bits)
    for col in range(N):
        kind = rng.randrange(7)
        if kind == 0:      # every class equal: a tie for the maximum everywhere
            z[:, col] = rng.randint(cfg.data_min, cfg.data_max)
        elif kind == 1 and M > 1:    # two classes tie for the maximum
            i, j = rng.sample(range(M), 2)
            z[i, col] = z[j, col] = cfg.data_max
        elif kind == 2:    # the operand extremes: differences run past the exp table
            z[:, col] = torch.tensor([rng.choice([cfg.data_min, cfg.data_max]) for _ in range(M)])
        elif kind == 3 and M > 1:    # differences at the table's last entry and one past it
            top = cfg.data_max
            for i in range(M):
                d = rng.choice([table_end - 1, table_end, 0, 1])
                z[i, col] = max(top - d, cfg.data_min)
        elif kind == 4:    # small logits around 0 (the usual case of a trained network)
            z[:, col] = torch.randint(-(2 << cfg.frac_bits), 2 << cfg.frac_bits, (M,), generator=g)
    return z


def _loss_regions(rng, spad, V: int, max_classes: int, max_batch: int):
    """A LOSS's shape, aimed at 1, 2 and V as often as at random ones, and its logits (Z),
    labels (Y) and error (D) regions (None where one does not fit)."""
    M = rng.choice([1, 2, rng.randint(1, max_classes), rng.randint(2, max_classes)])
    N = rng.choice([1, V, rng.randint(1, max_batch), rng.randint(1, max_batch)])
    return (M, N, spad.region(M, N, V, slack=True), spad.region(1, N, V, slack=True),
            spad.region(M, N, V, slack=True))


def loss_scenario(cfg: Config, seed: int, n_commands: int = 2, max_classes: int = 12,
                  max_batch: int = 20, bad_label: bool = False) -> Scenario:
    """LOSS commands on edge-aimed logits, random shapes, strides and shifts; with
    ``bad_label`` the last command has one label out of range in a random group."""
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    sc = Scenario(cfg, name=f"loss(seed={seed}{', bad label' if bad_label else ''})")
    for n in range(n_commands):
        M, N, Z, Y, D = _loss_regions(rng, spad, V, max_classes, max_batch)
        if None in (Z, Y, D):
            raise ValueError(f"loss scenario seed={seed}: command {n} ({M} x {N}) does not fit")
        labels = torch.tensor([[rng.randrange(M) for _ in range(N)]])
        if bad_label and n == n_commands - 1:
            labels[0, rng.randrange(N)] = rng.choice([M, -1, cfg.data_max, cfg.data_min])
        sc.inputs += [("spad", Z, _logits(M, N, cfg, rng)), ("spad", Y, labels),
                      ("spad", D, torch.zeros((M, N), dtype=torch.int64))]
        shift = rng.choice([0, rng.randint(0, 8), rng.randint(0, 20), numerics.EXP_FRAC - cfg.frac_bits])
        sc.commands.append(Command.loss(M, N, Z, Y, D, shift=shift))
        sc.outputs.append(("spad", D))
    sc.commands.append(Command())
    return sc


def _error_program_data(cfg: Config, rng: random.Random):
    """The regions and inputs of the error programs: a good LOSS of 3 classes x 5 samples (Z,
    Y, D) and a 3x4x5 GEMM (A, B, C)."""
    V = cfg.banks
    Z = Region.packed(0, 3, 5, V)
    Y = Region.packed(Z.end(V), 1, 5, V)
    D = Region.packed(Y.end(V), 3, 5, V)
    A = Region.packed(D.end(V), 3, 4, V)
    B = Region.packed(A.end(V), 4, 5, V)
    C = Region.packed(B.end(V), 3, 5, V)
    inputs = [("spad", Z, _logits(3, 5, cfg, rng)), ("spad", Y, torch.tensor([[0, 1, 2, 1, 0]])),
              ("spad", A, random_matrix(3, 4, cfg, rng)), ("spad", B, random_matrix(4, 5, cfg, rng))]
    return Z, Y, D, A, B, C, inputs


def train_error_scenarios(cfg: Config) -> dict[str, tuple[Scenario, ErrorCode]]:
    """One program per error of the training commands, each after a good LOSS (the error comes
    at slot 1, with its results written), with the error it must stop with."""
    V = cfg.banks
    Z, Y, D, A, B, C, inputs = _error_program_data(cfg, random.Random(4321))
    aux = Region(0, 3, 5, C.ld)
    good = Command.loss(3, 5, Z, Y, D, shift=6)
    far = Region(cfg.acc_depth - 1, 3, 5, C.ld)
    loss_epilogue = dataclasses.replace(good, epilogue=Epilogue.RELU)
    bad_labels = Region.packed(C.end(V), 1, 5, V)
    bad = {
        "label_high": (Command.loss(3, 5, Z, bad_labels, D, shift=6),
                       ErrorCode.BAD_LABEL),
        "aux_range": (Command.gemm(3, 4, 5, A, B, C, epilogue=Epilogue.MASK, aux=far),
                      ErrorCode.AUX_RANGE),
        "epilogue_acc": (Command.gemm(3, 4, 5, A, B, Region.packed(0, 3, 5, V),
                                      out_mode=OutMode.ACC, epilogue=Epilogue.RELU, aux=aux),
                         ErrorCode.BAD_EPILOGUE),
        "epilogue_loss": (loss_epilogue, ErrorCode.BAD_EPILOGUE),
        "lr_shift": (Command.gemm(3, 4, 5, A, B, C, shift=cfg.acc_width - 2,
                                  epilogue=Epilogue.UPDATE, aux=aux), ErrorCode.BAD_SHIFT),
        "loss_zero": (Command.loss(0, 5, Z, Y, D, shift=6), ErrorCode.ZERO_DIM),
        "loss_overlap": (Command.loss(3, 5, Z, Y, Region(Z.base + 1, 3, 5, Z.ld), shift=6),
                         ErrorCode.OVERLAP),
        "loss_range": (Command.loss(3, 5, Z, Y, Region(cfg.spad_depth - 1, 3, 5, D.ld), shift=6),
                       ErrorCode.C_RANGE),
    }
    classes = numerics.max_classes(cfg.data_width)
    if cfg.max_dim > classes:
        big = Region(0, classes + 1, 1, 1)
        bad["loss_classes"] = (Command.loss(classes + 1, 1, big, Y, D, shift=6),
                               ErrorCode.LOSS_CLASSES)
    out = {}
    for name, (cmd, code) in bad.items():
        # the last label is the class count: out of range, in the last group of samples
        extra = [("spad", bad_labels, torch.tensor([[0, 1, 2, 1, 3]]))] if name == "label_high" else []
        sc = Scenario(cfg, inputs=list(inputs) + extra, commands=[good, cmd, Command()],
                      outputs=[("spad", D), ("spad", C)], name=f"error:{name}", lr_shift=3)
        out[name] = (sc, code)
    return out



def skip_scenario(cfg: Config, seed: int, n_losses: int = 2, max_classes: int = 10,
                  max_batch: int = 18, sample: SamplePolicy | None = None,
                  mode: ConfMode | None = None) -> Scenario:
    """The confidence comparator and the batch-skip controller: per LOSS (edge-aimed logits), a
    policy, a confidence mode, require_correct and thresholds aimed at the decision edges (the
    per-sample threshold exactly at one sample's S, p_y or margin; the batch threshold exactly
    at the batch sum, one above it, 0 or the largest), or a random skip at rate 0, 1 or between;
    a per-sample policy (``sample``, or drawn) that skips none, some or every sample, with the
    confidence mode ``mode`` (or drawn); for true_class_prob TCP_BOUND from CONF_TAU
    (skiptrain.skip.tcp_bound), or, one time in three, exactly at one sample's d_y + L or one
    above it;
    after each LOSS two gated GEMMs (B, G) and an ungated one. The registers stay the same for
    the whole run; the decision changes from LOSS to LOSS."""
    from .loss_unit import Comparator, confidence  # noqa: PLC0415 (beside its use)
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    policy = rng.choice([BatchPolicy.CONFIDENCE, BatchPolicy.CONFIDENCE, BatchPolicy.RANDOM, BatchPolicy.OFF])
    drawn = rng.choice([SamplePolicy.OFF, SamplePolicy.CONFIDENCE, SamplePolicy.CONFIDENCE,
                        SamplePolicy.RANDOM])
    sample = drawn if sample is None else sample
    mode = rng.choice(list(ConfMode)) if mode is None else mode
    ctrl = SkipCtrl(policy, mode, rng.random() < 0.5, sample)
    sc = Scenario(cfg, name=f"skip(seed={seed}, {ctrl})")
    logits = []
    for n in range(n_losses):
        M, N, Z, Y, D = _loss_regions(rng, spad, V, max_classes, max_batch)
        A = Z   # the gated GEMMs read the logits as A (M x K=N) and B (K=N x 3)
        B = spad.region(N, 3, V, slack=False)
        C = spad.region(M, 3, V, slack=True)
        C2 = spad.region(M, 3, V, slack=True)
        if None in (Z, Y, D, A, B, C, C2):
            raise ValueError(f"skip scenario seed={seed}: LOSS {n} ({M} x {N}) does not fit")
        z = _logits(M, N, cfg, rng)
        labels = torch.tensor([[rng.randrange(M) for _ in range(N)]])
        logits.append((z, labels[0]))
        sc.inputs += [("spad", Z, z), ("spad", Y, labels), ("spad", D, torch.zeros((M, N), dtype=torch.int64)),
                      ("spad", B, random_matrix(N, 3, cfg, rng)),
                      ("spad", C, torch.zeros((M, 3), dtype=torch.int64)),
                      ("spad", C2, torch.zeros((M, 3), dtype=torch.int64))]
        shift = rng.randint(4, 12)
        sc.commands += [Command.loss(M, N, Z, Y, D, shift=shift),
                        Command.gemm(M, N, 3, A, B, C, shift=cfg.frac_bits, phase=Phase.BWD_INPUT,
                                     gate=Gate.BATCH),
                        Command.gemm(M, N, 3, A, B, C2, shift=cfg.frac_bits, phase=Phase.BWD_WEIGHT,
                                     gate=Gate.BATCH),
                        Command.gemm(M, N, 3, A, B, C2, shift=cfg.frac_bits, phase=Phase.FWD)]
        sc.outputs += [("spad", D), ("spad", C), ("spad", C2)]
    sc.commands.append(Command())
    # thresholds at the edges of the first LOSS's values
    z, labels = logits[0]
    probe = Comparator(ctrl.mode, ctrl.require_correct, 0)
    exp, _ = tables(cfg.frac_bits)
    zmax, argmax, d, L = softmax_parts(z, cfg)
    values = {ConfMode.MAX_PROB: exp_lookup(d, exp).sum(dim=0), ConfMode.MARGIN: None,
              ConfMode.TRUE_CLASS_PROB: exp_lookup(d[labels, torch.arange(len(labels))] + L, exp)}
    _, c = confidence(z, labels, probe, cfg)
    per_sample = values[ctrl.mode] if values[ctrl.mode] is not None else c
    conf_tau = int(per_sample[rng.randrange(len(per_sample))]) + rng.choice([0, 0, -1, 1])
    if sample == SamplePolicy.CONFIDENCE and rng.random() < 0.3:
        # every sample skipped (those argmax == label with require_correct), or none
        conf_tau = rng.choice([0, (1 << CONF_TAU_WIDTH) - 1])
    batch_sum = int(c.sum())
    top = (1 << batch_tau_width(cfg)) - 1
    batch_tau = rng.choice([batch_sum, batch_sum, batch_sum + 1, 0, top])
    rate = rng.choice([0, 1 << 16, rng.randrange(1 << 16), 1 << 15])
    conf_tau = max(conf_tau, 0)
    bound = tcp_bound(conf_tau, cfg)
    if rng.random() < 1 / 3:
        index = d[labels, torch.arange(len(labels))] + L
        bound = int(index[rng.randrange(len(index))]) + rng.choice([0, 1])
    sc.skip = {"ctrl": ctrl.encode(), "conf_tau": conf_tau, "batch_tau": batch_tau,
               "rate": rate, "seed": rng.getrandbits(32), "tcp_bound": bound}
    return sc


def _margin_column(M: int, cfg: Config, rng: random.Random) -> tuple[list[int], str]:
    """One sample's logits (M >= 2 classes) whose margin, the least z_max - z over the rows
    other than the argmax, lies where a running minimum kept per row parity can go wrong:
    on an even or an odd row, first or last, after larger and after smaller values of the
    other parity; and the kind of column."""
    a = rng.randrange(M)                      # the argmax row
    others = [r for r in range(M) if r != a]
    kind = rng.choice(["decreasing", "increasing", "odd_falls", "even_falls", "at_last",
                       "at_first", "tie", "random_small", "saturated"])
    hi = min(cfg.data_max - cfg.data_min, 40)
    if kind == "decreasing":       # every next row closer to the maximum: the minimum last
        d = sorted(rng.sample(range(1, hi + 1), len(others)), reverse=True)
    elif kind == "increasing":     # the minimum on the first row that is not the argmax
        d = sorted(rng.sample(range(1, hi + 1), len(others)))
    elif kind in ("odd_falls", "even_falls"):
        # one parity falls row by row, the other stays between its first and its last value
        falls = 1 if kind == "odd_falls" else 0
        steps = iter(range(hi, 0, -3))
        d = [next(steps, 1) if r % 2 == falls else hi // 2 + 1 for r in others]
    elif kind == "at_last":        # every row far but the last one that is not the argmax
        d = [hi] * (len(others) - 1) + [rng.randint(0, 3)]
    elif kind == "at_first":
        d = [rng.randint(0, 3)] + [hi] * (len(others) - 1)
    elif kind == "tie":            # another row at the maximum: margin 0, on either parity
        d = [rng.randint(1, hi) for _ in others]
        d[rng.randrange(len(d))] = 0
    elif kind == "random_small":   # differences of a few steps, ties among them
        d = [rng.randint(0, 4) for _ in others]
    else:                          # the operand extremes: the margin the whole range
        return [cfg.data_max if r == a else cfg.data_min for r in range(M)], kind
    zmax = rng.randint(cfg.data_min + max(d), cfg.data_max)
    col = [zmax] * M
    for r, dr in zip(others, d):
        col[r] = zmax - dr
    return col, kind


def margin_scenario(cfg: Config, seed: int, max_classes: int = 9) -> Scenario:
    """The margin test (``ConfMode.MARGIN``) on logits built for it (:func:`_margin_column`):
    M of 6 .. ``max_classes`` classes, two groups of samples and one partial; the per-sample
    threshold at one sample's margin, or one above or below it (every sample is decided by
    its margin against it), the batch threshold exactly at the sum of the margins. A LOSS with
    the per-sample skip (its kept columns compacted into dY), then a GEMM gated by the batch
    decision."""
    from .loss_unit import Comparator, confidence  # noqa: PLC0415 (beside its use)
    rng = random.Random(seed)
    V = cfg.banks
    M, N = rng.randint(6, max_classes), 2 * V + rng.randint(1, V)
    spad = _Allocator(cfg.spad_depth, rng)
    Z, Y, D = (spad.region(M, N, V, slack=True), spad.region(1, N, V, slack=True),
               spad.region(M, N, V, slack=True))
    B, C = spad.region(N, 3, V, slack=False), spad.region(M, 3, V, slack=True)
    if None in (Z, Y, D, B, C):
        raise ValueError(f"margin scenario seed={seed}: {M} x {N} does not fit")
    cols, kinds = zip(*(_margin_column(M, cfg, rng) for _ in range(N)))
    z = torch.tensor(cols, dtype=torch.int64).T.contiguous()
    labels = torch.tensor([[rng.randrange(M) for _ in range(N)]])
    ctrl = SkipCtrl(BatchPolicy.CONFIDENCE, ConfMode.MARGIN, False, SamplePolicy.CONFIDENCE)
    _, c = confidence(z, labels[0], Comparator(ConfMode.MARGIN, False, 0), cfg)
    conf_tau = max(0, int(c[rng.randrange(N)]) + rng.choice([0, 0, -1, 1]))
    sc = Scenario(cfg, name=f"margin(seed={seed}, {M} x {N}, {', '.join(sorted(set(kinds)))})")
    sc.inputs += [("spad", Z, z), ("spad", Y, labels), ("spad", D, torch.zeros((M, N), dtype=torch.int64)),
                  ("spad", B, random_matrix(N, 3, cfg, rng)), ("spad", C, torch.zeros((M, 3), dtype=torch.int64))]
    sc.commands += [Command.loss(M, N, Z, Y, D, shift=rng.randint(4, 8)),
                    Command.gemm(M, N, 3, Z, B, C, shift=cfg.frac_bits, phase=Phase.BWD_INPUT,
                                 gate=Gate.BATCH),
                    Command()]
    sc.outputs += [("spad", D), ("spad", C)]
    sc.skip = {"ctrl": ctrl.encode(), "conf_tau": conf_tau, "batch_tau": int(c.sum()),
               "rate": 0, "seed": rng.getrandbits(32), "tcp_bound": 0}
    return sc


def skip_error_scenarios(cfg: Config) -> dict[str, tuple[Scenario, ErrorCode]]:
    """The gate and skip-register errors, each after a good LOSS (the error comes at slot 1)."""
    Z, Y, D, A, B, C, inputs = _error_program_data(cfg, random.Random(99))
    good = Command.loss(3, 5, Z, Y, D, shift=6)
    gemm = Command.gemm(3, 4, 5, A, B, C, shift=cfg.frac_bits)
    # a GEMM whose K is the LOSS's 5 samples, B stored transposed (5 x 5 over B and C's words)
    bt = Region(B.base, 5, 4, B.ld)
    over_k = Command.gemm(3, 5, 4, A, bt, C, trans_b=True, shift=cfg.frac_bits)
    bad = {
        "samples_m_batch_not_loss_n": (dataclasses.replace(gemm, gate=Gate.SAMPLES_M), {},
                                       ErrorCode.BAD_GATE),
        "samples_k_batch_not_loss_n": (dataclasses.replace(gemm, gate=Gate.SAMPLES_K, trans_b=1), {},
                                       ErrorCode.BAD_GATE),
        "samples_k_not_transposed": (dataclasses.replace(over_k, gate=Gate.SAMPLES_K, trans_b=0), {},
                                     ErrorCode.BAD_GATE),
        "samples_m_update": (dataclasses.replace(gemm, m=5, gate=Gate.SAMPLES_M, epilogue=Epilogue.UPDATE,
                                                 aux_base=0), {}, ErrorCode.BAD_GATE),
        "gate_on_loss": (dataclasses.replace(good, gate=Gate.BATCH), {}, ErrorCode.BAD_GATE),
        "policy_unassigned": (good, {"ctrl": 3}, ErrorCode.SKIP_CONFIG),
        "mode_unassigned": (good, {"ctrl": 1 | 3 << 2}, ErrorCode.SKIP_CONFIG),
        "sample_unassigned": (good, {"ctrl": 3 << 5}, ErrorCode.SKIP_CONFIG),
    }
    out = {}
    for name, (cmd, skip, code) in bad.items():
        # the register errors stop the first LOSS: slot 0
        commands = [cmd, Command()] if skip else [good, cmd, Command()]
        sc = Scenario(cfg, inputs=list(inputs), commands=commands, outputs=[("spad", D), ("spad", C)],
                      name=f"error:{name}", skip=skip)
        out[name] = (sc, code)
    return out


def sample_gather_scenario(cfg: Config, seed: int, classes: int | None = None) -> Scenario:
    """The per-sample skip's kept list at its timing edges: LOSS commands of few classes (one
    class is the shortest group, the next group's SUM pass close behind the decision), a random
    or confidence per-sample policy, and after each LOSS a GEMM over the kept samples that
    gathers its B operand through the kept list (``Gate.SAMPLES_K``, as G does)."""
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    # with one class every S is EXP[0]: the confidence policy would keep all or none
    sample = SamplePolicy.RANDOM if classes == 1 else rng.choice([SamplePolicy.RANDOM, SamplePolicy.CONFIDENCE])
    ctrl = SkipCtrl(sample=sample, require_correct=False)
    sc = Scenario(cfg, name=f"sample_gather(seed={seed}, {ctrl})")
    passes = []
    for n in range(2):
        M = classes if classes is not None else rng.choice([1, 1, 2, 3])
        N = rng.choice([2 * V + 1, 3 * V, rng.randint(V + 1, min(cfg.max_batch, 4 * V))])
        P = rng.randint(1, 3)
        Z, Y, D = (spad.region(M, N, V, slack=True), spad.region(1, N, V, slack=True),
                   spad.region(M, N, V, slack=True))
        # A: random, not the dY (with one class dY is 0); its first KEPT columns are summed
        # against op(B) = Bt^T (N x P) rows gathered through the kept list
        A = spad.region(2, N, V, slack=True)
        Bt = spad.region(P, N, V, slack=False)
        C = spad.region(2, P, V, slack=True)
        if None in (Z, Y, D, A, Bt, C):
            raise ValueError(f"sample gather scenario seed={seed}: LOSS {n} ({M} x {N}) does not fit")
        z = _logits(M, N, cfg, rng)
        passes.append(z)
        sc.inputs += [("spad", Z, z), ("spad", Y, torch.tensor([[rng.randrange(M) for _ in range(N)]])),
                      ("spad", D, torch.zeros((M, N), dtype=torch.int64)),
                      ("spad", A, random_matrix(2, N, cfg, rng)), ("spad", Bt, random_matrix(P, N, cfg, rng)),
                      ("spad", C, torch.zeros((2, P), dtype=torch.int64))]
        sc.commands += [Command.loss(M, N, Z, Y, D, shift=rng.randint(4, 10)),
                        Command.gemm(2, N, P, A, Bt, C, trans_b=True, shift=cfg.data_width + 3,
                                     phase=Phase.BWD_WEIGHT, gate=Gate.SAMPLES_K)]
        sc.outputs += [("spad", D), ("spad", C)]
    sc.commands.append(Command())
    # a threshold at the first LOSS's median S keeps about half of its samples
    exp, _ = tables(cfg.frac_bits)
    _, _, d, _ = softmax_parts(passes[0], cfg)
    s = exp_lookup(d, exp).sum(dim=0).sort().values
    sc.skip = {"ctrl": ctrl.encode(), "conf_tau": int(s[len(s) // 2]), "rate": 1 << 15,
               "seed": rng.getrandbits(32)}
    return sc


def kept_norm_scenario(cfg: Config, seed: int, stochastic: bool | None = None) -> Scenario:
    """The kept-count normaliser (``cfg.kept_norm``) at its edges: per LOSS (a power-of-two
    batch of V to 4V samples, at most max_batch) a per-sample skip that keeps every sample
    (the factor exactly 1), none (B, G and U skipped), one (the largest factor), or about half
    of them (a random rate, or the median S), then a SAMPLES_K GEMM with the UPDATE epilogue
    over master weights drawn at the accumulator's limits, with SKIP_CTRL's norm_kept set
    (or, one time in four, clear: the batch normalisation on the same hardware). The update's
    shift is aimed at the exponent of batch / kept: shift + LR_SHIFT equals log2 of the batch
    one time in three (so a single kept sample's step is not rounded before the multiply)."""
    if not cfg.kept_norm:
        raise ValueError(f"kept_norm scenario: config {cfg.name!r} has kept_norm=False")
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    accm = _Allocator(cfg.acc_depth, rng)
    norm = rng.random() < 0.75
    sample = rng.choice([SamplePolicy.RANDOM, SamplePolicy.RANDOM, SamplePolicy.CONFIDENCE])
    ctrl = SkipCtrl(sample=sample, norm_kept=norm)
    stochastic = rng.random() < 0.25 if stochastic is None else stochastic
    lr_shift = rng.randint(0, 3)
    sc = Scenario(cfg, name=f"kept_norm(seed={seed}, {ctrl}, stochastic={stochastic})",
                  lr_shift=lr_shift, stochastic=stochastic, sr_seed=rng.getrandbits(32))
    lo, hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
    first_z = None
    for n in range(2):
        sizes = [N for N in (V, 2 * V, 4 * V) if N <= cfg.max_batch]
        N = rng.choice(sizes)
        M = rng.randint(2, 4)
        P, Q = rng.randint(1, 3), rng.randint(1, 2 * V + 1)
        Z, Y, D = (spad.region(M, N, V, slack=True), spad.region(1, N, V, slack=True),
                   spad.region(M, N, V, slack=True))
        A, Bt, C = (spad.region(P, N, V, slack=True), spad.region(Q, N, V, slack=False),
                    spad.region(P, Q, V, slack=False))
        W = accm.region(P, Q, V, slack=False)  # the master weights: C's ld (no slack either)
        if None in (Z, Y, D, A, Bt, C, W):
            raise ValueError(f"kept_norm scenario seed={seed}: LOSS {n} ({M} x {N}) does not fit")
        z = _logits(M, N, cfg, rng)
        first_z = z if first_z is None else first_z
        g = torch.Generator().manual_seed(rng.getrandbits(31))
        # master weights anywhere, and at the accumulator's limits, where the update saturates
        w = torch.randint(lo, hi + 1, (P, W.ld * V), generator=g)[:, :Q]
        edge = torch.tensor([lo, lo + 1, hi, hi - 1, 0])
        pick = torch.rand((P, Q), generator=g) < 0.3
        w = torch.where(pick, edge[torch.randint(len(edge), (P, Q), generator=g)], w)
        sc.inputs += [("spad", Z, z), ("spad", Y, torch.tensor([[rng.randrange(M) for _ in range(N)]])),
                      ("spad", D, torch.zeros((M, N), dtype=torch.int64)),
                      ("spad", A, random_matrix(P, N, cfg, rng, extreme=rng.random() < 0.3)),
                      ("spad", Bt, random_matrix(Q, N, cfg, rng)),
                      ("spad", C, torch.zeros((P, Q), dtype=torch.int64)), ("acc", W, w)]
        log_n = N.bit_length() - 1
        total = rng.choice([log_n, log_n, rng.randint(log_n, log_n + 2 * cfg.frac_bits)])
        shift = max(0, total - lr_shift)
        sc.commands += [Command.loss(M, N, Z, Y, D, shift=rng.randint(4, 10)),
                        Command.gemm(P, N, Q, A, Bt, C, trans_b=True, shift=shift, phase=Phase.BWD_WEIGHT,
                                     gate=Gate.SAMPLES_K, epilogue=Epilogue.UPDATE, aux=W)]
        sc.outputs += [("spad", D), ("spad", C), ("acc", W)]
    sc.commands.append(Command())
    # the rate: keep all (0), none (2**16), about half, or one in a few
    rate = rng.choice([0, 1 << 16, 1 << 15, rng.randrange(1 << 16), (1 << 16) - (1 << 13)])
    exp, _ = tables(cfg.frac_bits)
    _, _, d, _ = softmax_parts(first_z, cfg)
    s = exp_lookup(d, exp).sum(dim=0).sort().values
    conf_tau = rng.choice([int(s[len(s) // 2]), 0, int(s[-1]), int(s[-2]) if len(s) > 1 else 0])
    sc.skip = {"ctrl": ctrl.encode(), "conf_tau": conf_tau, "rate": rate, "seed": rng.getrandbits(32)}
    return sc


def kept_norm_error_scenarios(cfg: Config) -> dict[str, tuple[Scenario, ErrorCode]]:
    """The normaliser's refusals: norm_kept on hardware without it (SKIP_CONFIG at the LOSS);
    with it, a normalised update after a LOSS of a batch that is not a power of two
    (BAD_GATE), and one whose shift + LR_SHIFT is below the exponent of batch / kept
    (BAD_SHIFT)."""
    Z, Y, D, A, B, C, inputs = _error_program_data(cfg, random.Random(98))
    ctrl = SkipCtrl(sample=SamplePolicy.RANDOM, norm_kept=True).encode()
    out = {}
    if not cfg.kept_norm:
        good = Command.loss(3, 4, Z, Y, D, shift=6)
        sc = Scenario(cfg, inputs=list(inputs), commands=[good, Command()],
                      outputs=[("spad", D)], name="error:norm_without_normaliser", skip={"ctrl": ctrl})
        return {"norm_without_normaliser": (sc, ErrorCode.SKIP_CONFIG)}
    for name, n, shift, rate, code in (("norm_batch_not_pow2", 5, 6, 1 << 15, ErrorCode.BAD_GATE),
                                       # one sample of four kept: e = log2 4 = 2 > the shift 1
                                       ("norm_shift_below_exponent", 4, 1, 3 << 14, ErrorCode.BAD_SHIFT)):
        loss = Command.loss(3, n, Z, Y, D, shift=6)
        bt = Region(B.base, 4, n, B.ld)
        upd = Command.gemm(3, n, 4, A, bt, C, trans_b=True, shift=shift, gate=Gate.SAMPLES_K,
                           epilogue=Epilogue.UPDATE, aux=Region(0, 3, 4, C.ld))
        # the random skip's seed that keeps exactly one sample of four (e = 2), found here
        for seed in range(64):
            sc = Scenario(cfg, inputs=list(inputs), commands=[loss, upd, Command()],
                          outputs=[("spad", D), ("spad", C)], name=f"error:{name}",
                          skip={"ctrl": ctrl, "rate": rate, "seed": seed})
            if sc.expected()[1].error_code == code:
                break
        out[name] = (sc, code)
    return out
