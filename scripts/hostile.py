#!/usr/bin/env python3
"""Try to break lstmbench as a hostile new user would: one line per case, what it printed and how it ended.

    .venv/bin/python scripts/hostile.py [NAME_SUBSTRING ...]

Each case runs `python -m lstmbench ...` in a scratch folder under a time limit (a hang) and an address-space
limit (an alias bomb); a clean answer is exit 2 (or 1 where a run failed) with one `Error:` line. Not a test:
tests/test_hostile.py pins the exact sentences; this prints them all side by side, before and after a change.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "device": "cpu", "seeds": [0],
        "data": {"source": "synthetic", "train_size": 64, "eval_size": 32, "vocab_size": 16,
                 "lengths": {"dist": "lognormal", "median": 8, "sigma": 0.8, "min": 2, "max": 40}},
        "model": {"embed_dim": 8, "hidden_size": 12},
        "train": {"batch_size": 16, "epochs": 1, "lr": 0.01, "warmup_steps": 1},
        "strategies": ["mask"], "ideal": False}
BOMB = "[&a [x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"


def tiny(**changes: object) -> str:
    suite = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        node = suite
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return yaml.safe_dump(suite, sort_keys=False)


BASE: list[dict] = []  # real rows of the tiny suite, seeds 0-2, made once by main()


def row(**changes: object) -> str:
    seed = changes.get("seed", 0)
    base = dict(BASE[seed if isinstance(seed, int) else 0])
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v != "DROP"}) + "\n"


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments of lstmbench, a shell set-up run in the scratch folder first)."""
    w = lambda name, text: f"cat > {name} <<'EOF'\n{text}EOF\n"  # noqa: E731
    rows3 = "".join(row(seed=s) for s in range(3))
    return [
        ("1 run --out FILE", ["run", "s.yaml", "--out", "afile", "--inline"], w("s.yaml", tiny()) + "touch afile"),
        ("1 report --out FILE", ["report", "r", "--out", "afile"], w("r/tiny/a.jsonl", rows3) + "touch afile"),
        ("2 alias bomb in description", ["validate", "s.yaml"],
         w("s.yaml", tiny().replace("name: tiny", "name: tiny\ndescription: " + BOMB))),
        ("2 alias bomb in seeds", ["validate", "s.yaml"], w("s.yaml", tiny().replace("seeds:\n- 0", "seeds: " + BOMB))),
        ("2 alias bomb in sweep", ["validate", "s.yaml"], w("s.yaml", tiny() + "sweep: {train.lr: " + BOMB + "}\n")),
        ("2 nesting 500 deep", ["validate", "s.yaml"], w("s.yaml", tiny() + "description: " + "[" * 500 + "]" * 500 + "\n")),
        ("2 integer of 400 digits", ["validate", "s.yaml"], w("s.yaml", tiny().replace("epochs: 1", "epochs: " + "9" * 400))),
        ("2 integer of 5000 digits", ["validate", "s.yaml"], w("s.yaml", tiny().replace("epochs: 1", "epochs: " + "9" * 5000))),
        ("2 duplicate train key", ["validate", "s.yaml"], w("s.yaml", tiny() + "train: {epochs: 2}\n")),
        ("2 special float lr .nan", ["validate", "s.yaml"], w("s.yaml", tiny().replace("lr: 0.01", "lr: .nan"))),
        ("2 suite file is a FIFO", ["validate", "fifo.yaml"], "mkfifo fifo.yaml"),
        ("2 suite file is /dev/zero", ["validate", "/dev/zero"], ""),
        ("3 FIFO as data.path", ["validate", "s.yaml"],
         "mkfifo d.csv\n" + w("s.yaml", tiny(data__source="text", data__path="d.csv"))),
        ("3 FIFO as lengths.file", ["validate", "s.yaml"],
         "mkfifo l.txt\n" + w("s.yaml", tiny(data__lengths={"dist": "empirical", "file": "l.txt"}))),
        ("3 FIFO .jsonl in results", ["report", "r"], w("r/tiny/a.jsonl", rows3) + "mkfifo r/tiny/b.jsonl"),
        ("3 /dev/zero as .jsonl", ["report", "r"], w("r/tiny/a.jsonl", rows3) + "ln -s /dev/zero r/tiny/z.jsonl"),
        ("3 /dev/zero as lengths.file", ["validate", "s.yaml"],
         w("s.yaml", tiny(data__lengths={"dist": "empirical", "file": "/dev/zero"}))),
        ("3 NUL byte in data.path", ["validate", "s.yaml"],
         w("s.yaml", tiny(data__source="text", data__path="d\0.csv"))),
        ("4 three rows, eval_size 0", ["validate", "s.yaml"],
         w("d.csv", "text,label\nab,a\ncd,b\nef,a\n")
         + w("s.yaml", tiny(data__source="text", data__path="d.csv", data__eval_size=0, data__train_size=0))),
        ("4 lengths of a 3-row csv", ["lengths", "d.csv"], w("d.csv", "text,label\nab,a\ncd,b\nef,a\n")),
        ("4 a 1,000,000-character text", ["validate", "s.yaml"],
         "python3 -c \"import sys; sys.stdout.write('text,label\\n' + 'a'*1000000 + ',x\\n' + "
         "''.join(f'ab{i},{\\\"xy\\\"[i%2]}\\n' for i in range(40)))\" > d.csv\n"
         + w("s.yaml", tiny(data__source="text", data__path="d.csv", data__eval_size=0, data__train_size=0))),
        ("4 csv with a byte-order mark", ["lengths", "d.csv"],
         "printf '\\xef\\xbb\\xbftext,label\\n' > d.csv\n"
         "for i in $(seq 40); do echo \"ab$i,$((i % 2))\" >> d.csv; done"),
        ("4 jsonl label is a list", ["lengths", "d.jsonl"],
         "for i in $(seq 40); do echo \"{\\\"text\\\": \\\"ab$i\\\", \\\"label\\\": [$((i % 2))]}\" >> d.jsonl; done"),
        ("5 schema_version \"2\" (report)", ["report", "r"], w("r/tiny/a.jsonl", row(schema_version="2"))),
        ("5 schema_version null (compare)", ["compare", "r", "r"], w("r/tiny/a.jsonl", row(schema_version=None))),
        ("5 schema_version \"2\" (export)", ["export", "r", "-o", "x.json"], w("r/tiny/a.jsonl", row(schema_version="2"))),
        ("5 row without suite (report)", ["report", "r"], w("r/tiny/a.jsonl", row(suite="DROP"))),
        ("5 one bad line among good rows", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(seed="zero"))),
        ("5 row of a newer schema", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(schema_version=99))),
        ("5 suite name ../../x in a row", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(suite="../../x"))),
        ("1 export -o FIFO", ["export", "r", "-o", "out.json"], w("r/tiny/a.jsonl", rows3) + "mkfifo out.json"),
        ("6 amp fp16 on cpu (validate)", ["validate", "s.yaml"], w("s.yaml", tiny(train__amp="fp16"))),
        ("6 seed 2**64 (validate)", ["validate", "s.yaml"], w("s.yaml", tiny(seeds=[2**64]))),
        ("6 amp bf16 on cpu (validate)", ["validate", "s.yaml"], w("s.yaml", tiny(train__amp="bf16"))),
        ("7 lengths --seed -5", ["lengths", "s.yaml", "--seed", "-5"], w("s.yaml", tiny())),
        ("7 verify --batches 0", ["verify", "s.yaml", "--batches", "0"], w("s.yaml", tiny())),
        ("7 verify, model too big", ["verify", "s.yaml"], w("s.yaml", tiny(model__hidden_size=10**6))),
        ("7 run, model too big", ["run", "s.yaml", "--out", "r"], w("s.yaml", tiny(model__hidden_size=10**6))),
        ("7 compare, NaN tokens/s", ["compare", "a", "b"],
         w("a/tiny/a.jsonl", rows3) + w("b/tiny/b.jsonl", "".join(row(seed=s, tokens_per_s=float("nan")) for s in range(3)))),
        ("7 sweep over name", ["validate", "s.yaml"], w("s.yaml", tiny() + "sweep: {name: [p, q]}\n")),
        # 8. issue 27: a results folder is untrusted input
        ("8 strategy name with code (python)", ["recommend", "r", "--format", "python"],
         w("r/tiny/a.jsonl", rows3 + row(strategy="x\nimport os; os.system('touch PWNED') #"))),
        ("8 suite_hash climbing out", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(suite_hash="x/../../../../x"))),
        ("8 device climbing out", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(device="cpu/../../x"))),
        ("8 report/ is a symlink", ["report", "r"], w("r/tiny/a.jsonl", rows3) + "mkdir away; ln -s ../../away r/tiny/report"),
        ("8 summary.md is a symlink", ["report", "r"],
         w("r/tiny/a.jsonl", rows3) + "mkdir -p r/tiny/report; echo mine > v.md; ln -s ../../../v.md r/tiny/report/summary.md"),
        ("8 report elsewhere/x.jsonl", ["report", "elsewhere/x.jsonl"], "mkdir elsewhere\n" + w("elsewhere/x.jsonl", rows3)),
        ("8 batch_size 'sixteen' in config", ["recommend", "r"],
         w("r/tiny/a.jsonl", rows3 + row(config={**BASE[0]["config"], "train": {**BASE[0]["config"]["train"],
                                                                                 "batch_size": "sixteen"}}))),
        ("8 env.cpu an integer", ["compare", "r", "r"], w("r/tiny/a.jsonl", rows3 + row(env={**BASE[0]["env"], "cpu": 5}))),
        ("8 accuracy 7.5", ["recommend", "r"], w("r/tiny/a.jsonl", rows3 + row(eval_accuracy=7.5))),
        ("8 negative time to target", ["recommend", "r"], w("r/tiny/a.jsonl", rows3 + row(time_to_target_s=-5.0))),
        ("8 malformed curve", ["report", "r"], w("r/tiny/a.jsonl", rows3 + row(curve=[[1.0, 2]]))),
        ("8 the same rows twice", ["recommend", "r"], w("r/tiny/a.jsonl", rows3) + w("r/tiny/b.jsonl", rows3)),
        ("8 BOM and CRLF", ["recommend", "r"],
         "printf '\\xef\\xbb\\xbf' > r/tiny/a.jsonl\n" + w("t.jsonl", rows3) + "sed 's/$/\\r/' t.jsonl >> r/tiny/a.jsonl"),
        ("8 --shard in superscripts", ["run", "s.yaml", "--shard", "\u00b2/2"], w("s.yaml", tiny())),
        ("8 --until-stable nan", ["run", "s.yaml", "--until-stable", "nan"], w("s.yaml", tiny())),
        ("8 a billion loader workers", ["validate", "s.yaml"], w("s.yaml", tiny(train__loader={"workers": 10**9}))),
        ("8 suite named report", ["validate", "s.yaml"], w("s.yaml", tiny(name="report"))),
        ("8 unknown option", ["run", "s.yaml", "--bogus"], w("s.yaml", tiny())),
    ]


def limit_memory() -> None:
    gib = 2**30
    resource.setrlimit(resource.RLIMIT_AS, (8 * gib, 8 * gib))


def main(selected: list[str]) -> int:
    exe = [sys.executable, "-m", "lstmbench"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s.yaml").write_text(tiny(seeds=[0, 1, 2]))
        subprocess.run(exe + ["run", "s.yaml", "--inline", "--out", "base"], cwd=tmp, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        for f in sorted((Path(tmp) / "base").rglob("*.jsonl")):
            BASE.extend(sorted((json.loads(line) for line in f.read_text().splitlines()), key=lambda r: r["seed"]))
        for name, args, setup in cases(Path(tmp)):
            if selected and not any(s in name for s in selected):
                continue
            folder = Path(tmp) / f"case{abs(hash(name))}"
            folder.mkdir()
            subprocess.run(["bash", "-c", f"mkdir -p r/tiny a/tiny b/tiny\n{setup}"], cwd=folder, check=True)
            start = time.perf_counter()
            try:
                p = subprocess.run(exe + args, cwd=folder, capture_output=True, text=True, timeout=30,
                                   preexec_fn=limit_memory, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdin=subprocess.DEVNULL)
                code, err = str(p.returncode), p.stderr.strip().splitlines()
            except subprocess.TimeoutExpired:
                code, err = "HANG", ["(killed after 30 s)"]
            seconds = time.perf_counter() - start
            last = err[-1] if err else "(nothing on stderr)"
            print(f"{name:<34} exit {code:<4} {seconds:5.1f}s {len(err):>4} lines  {last[:160]}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
