"""The length planner: exact pad arithmetic per strategy, from the same code that builds the batches."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.data.make import make_data
from lstmbench.strategies.lengths import PAD_MULTIPLE, histogram, length_stats, padding_table
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import load_suite


def test_plan_matches_collated_batches(tiny_file):
    suite = load_suite(tiny_file)
    plan = padding_table(suite)
    data = make_data(suite.data, 0).train
    assert [p.strategy for p in plan.strategies] == ["ideal", "naive", "truncate", "mask", "pack", "bucket"]
    for p, spec in zip(plan.strategies[1:], suite.strategies):
        strategy = Strategy(spec)
        batches = [strategy.collate(data, idx) for idx in plan_epochs(strategy, data.lengths, 16, 1, 0)]
        assert p.batches == len(batches) == 6
        assert p.real_tokens == sum(b.real_tokens for b in batches)
        assert p.padded_tokens == sum(b.padded_tokens for b in batches)
        assert p.largest_shape == max((tuple(b.tokens.shape) for b in batches), key=lambda s: s[0] * s[1])
        assert p.distinct_shapes == len({tuple(b.tokens.shape) for b in batches})
    by = {p.strategy: p for p in plan.strategies}
    assert by["ideal"].pad_fraction == 0 and by["naive"].pad_fraction > by["mask"].pad_fraction
    assert by["mask"].pad_fraction == by["pack"].pad_fraction > by["bucket"].pad_fraction
    assert by["naive"].note == "reads the output after the padding" and by["mask"].note == "exact"


def test_distinct_shapes_of_fixed_lengths_are_one_or_two(tiny_file):
    fixed = "data.lengths={dist: fixed, length: 12}"
    by = {p.strategy: p for p in padding_table(load_suite(tiny_file, [fixed])).strategies}  # 96 = 6 x 16
    assert {n: (p.distinct_shapes, p.shapes_at_multiple) for n, p in by.items()} == {
        "ideal": (1, None), "naive": (1, 1), "truncate": (1, 1), "mask": (1, 1), "pack": (1, 1), "bucket": (1, 1)}
    plan = padding_table(load_suite(tiny_file, [fixed, "train.batch_size=20", "strategies=[naive, mask, bucket, "
                                             "{token_budget: {max_tokens: 100}}, boundaries, sorted_pack]"]))
    shapes = {p.strategy: p.distinct_shapes for p in plan.strategies}
    assert shapes == {"ideal": 2, "naive": 2, "mask": 2, "bucket": 2, "token_budget": 1, "boundaries": 2,
                      "sorted_pack": 2}  # 96 = 4 x 20 + 16: the short last batch; token_budget: 12 x 8 exactly


def test_pad_multiple_8_leaves_fewer_shapes():
    from pathlib import Path

    packing = Path(__file__).resolve().parents[1] / "suites" / "packing.yaml"  # lognormal lengths, 64 batches
    plan = padding_table(load_suite(packing))
    assert PAD_MULTIPLE == 8
    by = {p.strategy: (p.distinct_shapes, p.shapes_at_multiple) for p in plan.strategies}
    assert by == {"ideal": (29, None), "naive": (1, 1), "truncate": (1, 1), "mask": (54, 28), "pack": (54, 28),
                  "bucket": (63, 21), "bucket-mask": (63, 21), "token_budget": (30, 30)}
    for p in plan.strategies:
        assert p.distinct_shapes <= p.batches
        assert p.shapes_at_multiple is None or p.shapes_at_multiple <= p.distinct_shapes
    # a strategy with its own pad_multiple: the column still counts at 8, as its header says
    own = padding_table(load_suite(packing, ["strategies=[{name: m64, batching: random, padding: batch, readout: mask, "
                                          "pad_multiple: 64}]"])).strategies[1]
    assert (own.distinct_shapes, own.shapes_at_multiple) == (6, 28)  # its own: widths in steps of 64


def test_stats_and_histogram():
    lengths = np.array([1, 2, 2, 3, 10, 100])
    st = length_stats(lengths)
    assert (st.n, st.min, st.median, st.max) == (6, 1, 2.5, 100) and st.mean == 118 / 6
    lines = histogram(lengths, bins=4, width=10)
    assert sum(int(line.split()[-1]) for line in lines) == 6
    assert max(line.count("#") for line in lines) == 10
    assert histogram(np.array([5, 5])) == ["     5 | " + "#" * 40 + " 2"]


def test_cli_lengths(tiny_file):
    r = CliRunner().invoke(main, ["lengths", str(tiny_file), "--set", "strategies=[mask, token_budget]"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "tiny: 96 training sequences (seed 0)"
    assert lines[1].startswith("  min 2  median ")
    assert any(line.startswith("| token_budget ") for line in lines)


def test_cli_lengths_of_a_data_file(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"{'x' * n},{n % 2}\n" for n in range(1, 41)))
    r = CliRunner().invoke(main, ["lengths", str(data), "--set", "train.batch_size=8"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "data: 32 training sequences (seed 0)"  # a fifth (8) held out
    assert any(line.startswith("| naive ") for line in lines)
    header = next(line for line in lines if line.startswith("| strategy"))
    assert header.replace(" ", "").endswith("|largestbatch|shapes|shapeswithpad_multiple8|")
    ideal = next(line for line in lines if line.startswith("| ideal "))
    assert ideal.replace(" ", "").endswith("|-|")  # the ideal's reshape has no padded time axis to round
    r = CliRunner().invoke(main, ["lengths", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and r.stderr == f"Error: {tmp_path / 'none.csv'}: data.path: " \
                                             f"{tmp_path / 'none.csv'}: no such file\n"


def test_lengths_plans_the_distributed_form_with_its_planned_wait():
    from pathlib import Path

    packing = Path(__file__).resolve().parents[1] / "suites" / "packing.yaml"
    suite = load_suite(packing, ["launch.nproc=2", "strategies=[bucket, {bucket: {name: b2, deal: balanced}}]"])
    plan = padding_table(suite)
    waits = {p.strategy: p.planned_wait for p in plan.strategies}
    assert waits["b2"] < waits["bucket"] / 3 and waits["b2"] > 0
    assert {p.strategy: p.batches for p in plan.strategies} == {"ideal": 64, "bucket": 64, "b2": 64}  # both ranks'
    r = CliRunner().invoke(main, ["lengths", str(packing), "--set", "launch.nproc=2"])
    assert r.exit_code == 0, r.output
    assert "One epoch on 2 DDP ranks (32 sequences a rank a step)" in r.output
    header = next(line for line in r.output.splitlines() if line.startswith("| strategy"))
    assert header.rstrip().endswith("planned wait % |")
