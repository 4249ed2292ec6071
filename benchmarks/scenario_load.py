"""Time loading the shipped scenarios (limits, jsonschema, rules, model) against safe_load.

Baseline, in the same run: ``yaml.safe_load`` of the same texts, the least any loader
must do. The figure to watch is the ratio; a first, unmeasured pass warms the caches
(the compiled schema), as in a real ``scenario run``.

    .venv/bin/python benchmarks/scenario_load.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import time

import yaml

from lab.scenario.load import list_scenarios, load_scenario
from lab.scenario.rules import PROJECT


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    paths = list_scenarios(PROJECT / "scenarios")
    texts = [path.read_text(encoding="utf-8") for path in paths]
    for path in paths:
        load_scenario(path)

    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            yaml.safe_load(text)
    baseline = (time.perf_counter() - start) / rounds

    start = time.perf_counter()
    for _ in range(rounds):
        for path in paths:
            load_scenario(path)
    loaded = (time.perf_counter() - start) / rounds

    print(f"{len(paths)} scenarios, {rounds} rounds")
    print(f"yaml.safe_load (baseline): {baseline * 1000:8.2f} ms per round")
    print(f"load_scenario:             {loaded * 1000:8.2f} ms per round "
          f"({loaded / baseline:.2f}x the baseline)")


if __name__ == "__main__":
    main()
