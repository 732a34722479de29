"""`lengths --tune`: the cost model's fit, the search and the memory cap as pure functions, and the command on a
tiny suite. No timing figure is asserted: probes are timed on whatever machine runs the tests."""
from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.data.make import make_data
from lstmbench.suite.config import StrategySpec
from lstmbench.suite.load import parse_strategy, suite_from_dict
from lstmbench.tune.costmodel import (
    MARGIN,
    PACKED,
    PADDED,
    BatchShape,
    Candidate,
    CostModel,
    MemoryCost,
    Prediction,
    Probe,
    Proposal,
    StepCost,
    TuneError,
    epoch_shapes,
    fit_model,
    fit_steps,
    predict,
    probe_grid,
    propose,
    search,
)
from tests.conftest import write_suite

SHAPES = [(8, 10), (8, 200), (64, 10), (64, 200), (32, 57), (128, 33), (16, 120)]


def test_fit_recovers_known_coefficients():
    a, b, c = 2e-3, 3e-5, 4e-6
    padded = [Probe(PADDED, rows, width, rows * width // 2, a + width * (b + c * rows), 1000 + 7 * rows * width)
              for rows, width in SHAPES]
    real = [rows * width * f for (rows, width), f in zip(SHAPES, (0.9, 0.3, 0.8, 0.25, 0.6, 0.5, 0.95))]
    packed = [Probe(PACKED, rows, width, int(r), 5e-3 + 2e-4 * width + 1e-6 * int(r) + 3e-9 * width * int(r),
                    500 + 3 * rows * width + 11 * int(r)) for (rows, width), r in zip(SHAPES, real)]
    model = fit_model(padded + packed)
    fit = model.steps[PADDED]
    assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), rel=1e-9)
    assert fit.probes == 7 and fit.mean_rel_error < 1e-9 and fit.max_rel_error < 1e-9
    pack = model.steps[PACKED]
    assert (pack.a, pack.b, pack.c, pack.d) == pytest.approx((5e-3, 2e-4, 1e-6, 3e-9), rel=1e-9)
    # a packed batch runs its longest sequence's steps (not pad_multiple's), and fused when all are of one length
    shape = BatchShape(rows=10, width=104, real_tokens=600, longest=100, uniform=False)
    assert model.seconds("pack_sorted", shape) == pytest.approx(5e-3 + 2e-4 * 100 + 1e-6 * 600 + 3e-9 * 100 * 600)
    assert model.seconds("mask", shape) == pytest.approx(a + 104 * (b + 10 * c))
    assert model.seconds("pack", BatchShape(10, 60, 600, 60, True)) == pytest.approx(a + 60 * (b + 10 * c))
    memory = model.memory[PADDED]
    assert (memory.base, memory.per_cell) == pytest.approx((1000, 7), rel=1e-9)
    packed_memory = model.memory[PACKED]
    assert (packed_memory.base, packed_memory.per_cell, packed_memory.per_real) == pytest.approx((500, 3, 11), rel=1e-9)
    with pytest.raises(TuneError, match="3 probes of 2 lengths"):  # one length: a and b cannot be told apart
        fit_steps([Probe(PADDED, r, 50, 10, 0.1) for r in (1, 2, 3)], PADDED)


def long_tailed():
    from lstmbench.suite.config import DataConfig, Lengths

    cfg = DataConfig(train_size=512, eval_size=16, lengths=Lengths(median=20, sigma=1.0, min=2, max=300))
    return make_data(cfg, 0).train


MODEL = CostModel({PADDED: StepCost(PADDED, 1e-3, 2e-5, 1e-6), PACKED: StepCost(PACKED, 1e-3, 3e-4, 2e-6)},
                  {PADDED: MemoryCost(PADDED, 2**20, 4000.0), PACKED: MemoryCost(PACKED, 2**20, 0.0, 4000.0)})


def test_search_prefers_bucketing_long_tailed_lengths():
    data = long_tailed()
    random = Candidate(parse_strategy("mask"), 32, "preset")
    bucket = Candidate(StrategySpec(name="bucket-mask", batching="bucket"), 32, "search")
    packed = Candidate(parse_strategy("bucket"), 32, "preset")  # the generic loop's per-step cost: slower here
    ranked, over = search([random, packed, bucket], data, MODEL, seed=0)
    assert [p.candidate.spec.name for p in ranked][0] == "bucket-mask" and len(ranked) == 3 and not over
    p = ranked[0]
    assert p.real_tokens == int(data.lengths.sum()) and p.sequences == len(data) and p.steps == 16
    shapes = epoch_shapes(bucket, data, 0)
    assert p.seconds == pytest.approx(sum(MODEL.seconds("mask", s) for step in shapes for s in step))
    proposal = propose(ranked, over, None, 32)
    assert proposal.best is ranked[0] and proposal.preset is ranked[1] and proposal.batch_size is None
    # under DDP a step waits for its slowest rank
    ranks = epoch_shapes(bucket, data, 0, world=2)
    two = predict(bucket, ranks, MODEL)
    times = [[MODEL.seconds("mask", s) for s in step] for step in ranks]
    assert two.steps == 8 and two.seconds == pytest.approx(sum(max(t) for t in times))
    assert two.seconds > sum(min(t) for t in times)


def test_memory_cap_leaves_out_the_large_batches():
    data = long_tailed()
    small = Candidate(StrategySpec(name="bucket-mask-16", batching="bucket"), 16, "search")
    large = Candidate(parse_strategy("mask"), 64, "preset")  # random batches: a 64 x 300 batch
    free = search([small, large], data, MODEL, seed=0)[0]
    peak = {p.candidate.spec.name: p.peak_bytes for p in free}
    assert peak["mask"] > peak["bucket-mask-16"] > 2**20
    cap = (peak["mask"] + peak["bucket-mask-16"]) / 2
    ranked, over = search([small, large], data, MODEL, seed=0, memory_cap=cap)
    assert [p.candidate.spec.name for p in ranked] == ["bucket-mask-16"]
    assert [p.candidate.spec.name for p in over] == ["mask"]
    with pytest.raises(TuneError, match="no exact candidate fits under --memory-cap 1 MiB"):
        propose(*search([small, large], data, MODEL, seed=0, memory_cap=2**20), 2**20, 32)


def test_a_gain_within_the_margin_keeps_the_preset():
    def prediction(name: str, origin: str, seconds: float) -> Prediction:
        return Prediction(Candidate(StrategySpec(name=name, batching="bucket"), 32, origin), 10, 320, 10_000, 11_000,
                          seconds, None, (32, 40))

    preset = prediction("bucket-mask", "suite", 1.0)
    slightly = propose([prediction("bucket-mask-b64", "search", 1 / (1 + MARGIN / 2)), preset], [], None, 32)
    assert slightly.best is slightly.preset is preset  # 2.5% faster: within the noise, the suite's own is kept
    clearly = propose([prediction("bucket-mask-b64", "search", 1 / (1 + 2 * MARGIN)), preset], [], None, 32)
    assert clearly.best.candidate.spec.name == "bucket-mask-b64" and clearly.preset is preset


def test_proposal_entry_parses_back():
    spec = StrategySpec(name="boundaries-pack-b16-e8.20.60", batching="boundaries", readout="pack",
                        boundaries=(8, 20, 60), pad_multiple=8)
    best = predict(Candidate(spec, 16, "search"), epoch_shapes(Candidate(spec, 16, "search"), long_tailed(), 0), MODEL)
    proposal = Proposal(best, best, 32)
    assert proposal.yaml == ("- {name: tuned, batching: boundaries, padding: batch, readout: pack, "
                             "boundaries: [8, 20, 60], pad_multiple: 8}")
    assert proposal.batch_size == 16
    parsed = parse_strategy(yaml.safe_load(proposal.yaml)[0])
    assert parsed == StrategySpec(name="tuned", batching="boundaries", readout="pack", boundaries=(8, 20, 60),
                                  pad_multiple=8)


def test_probe_grid_spans_shapes_early():
    lengths = long_tailed().lengths
    shapes = {PADDED: [(8 * 2 ** (i % 4), int(w)) for i, w in enumerate(lengths[:200])], PACKED: [(16, 40), (16, 90)]}
    grid = probe_grid(shapes, lengths)
    padded = [g for g in grid if g[0] == PADDED]
    assert len({w for _, _, w, _ in padded[:3]}) >= 2 and len({r for _, r, _, _ in padded[:3]}) >= 2
    assert all(w in set(lengths.tolist()) for _, _, w, _ in grid)  # lengths that occur: batches of real sequences
    assert [g[0] for g in grid[:4]] == [PADDED, PACKED, PADDED, PACKED]  # kinds alternate


@pytest.mark.slow
def test_cli_tune_proposes_a_valid_strategy(tmp_path, tiny_dict):
    path = write_suite(tmp_path, tiny_dict)
    r = CliRunner().invoke(main, ["lengths", str(path), "--tune", "--budget-s", "5"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "Tuned on cpu" in out and "fit error" in out and "predicted tokens/s" in out
    entry = next(line.strip() for line in out.splitlines() if line.strip().startswith("- {name: tuned"))
    raw = dict(tiny_dict, strategies=yaml.safe_load(entry))
    size = next((line for line in out.splitlines() if "with train.batch_size:" in line), None)
    if size:
        raw["train"] = dict(raw["train"], batch_size=int(size.split("train.batch_size:")[1].split()[0]))
    suite = suite_from_dict(raw)
    assert [s.name for s in suite.strategies] == ["tuned"]
    assert suite.strategies[0].readout in ("mask", "pack") and suite.strategies[0].padding == "batch"


@pytest.mark.parametrize("args, message", [
    (["--tune", "--memory-cap", "-5"], "Error: --memory-cap must be a positive number of MiB, got -5"),
    (["--tune", "--memory-cap", "0"], "Error: --memory-cap must be a positive number of MiB, got 0"),
    (["--tune", "--budget-s", "0"], "Error: --budget-s must be a positive number of seconds, got 0"),
    (["--memory-cap", "100"], "Error: --memory-cap, --budget-s and --check go with --tune"),
])
def test_cli_tune_refuses_bad_options(tiny_file, args, message):
    r = CliRunner().invoke(main, ["lengths", str(tiny_file), *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_probing_stops_at_its_overrun_limit_with_one_sentence(tiny_file, monkeypatch):
    """On a busy machine the first probes ran 50x slower (a 0.3 s budget took 158 s): they stop at OVERRUN times
    the budget, and a kind left with too few probes to fit is said so."""
    import lstmbench.tune.tuner

    monkeypatch.setattr(lstmbench.tune.tuner, "OVERRUN_FLOOR_S", 0.0)  # the limit: 10 x 0.01 s, spent by the first probe
    r = CliRunner().invoke(main, ["lengths", str(tiny_file), "--tune", "--budget-s", "0.01"])
    assert r.exit_code == 2, r.output
    error = r.stderr.splitlines()[-1]
    assert re.fullmatch(r"Error: probing stopped after \d+ s, over 10 times the --budget-s of 0.01 s, with too few "
                        r"(packed and padded|packed|padded) probes to fit \(\d+ timed while other processes used the "
                        r"CPU\); run it again on a quieter machine", error), error
