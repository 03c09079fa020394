"""The recovery model (benchmarks/recovery_model.py): its placement draws and its simulated times."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from benchmarks.recovery_model import GB, MB, TRACT_BYTES, calibrate_cap, main, plan_recovery, simulate


def _mean_seconds(seeds: range = range(1, 4), **kwargs: Any) -> float:
    return statistics.fmean(simulate(seed=s, **kwargs).seconds for s in seeds)


def test_one_tract_takes_read_send_receive_write() -> None:
    r = simulate(10, TRACT_BYTES, seed=1, io_overhead_s=0.005)
    assert r.tracts == 1
    disk = TRACT_BYTES / (120 * MB) + 0.005
    nic = TRACT_BYTES / (10e9 / 8)
    assert r.seconds == pytest.approx(2 * disk + 2 * nic)


def test_doubling_disk_bandwidth_halves_a_disk_bound_recovery() -> None:
    slow = simulate(100, 20 * GB, seed=1)
    fast = simulate(100, 20 * GB, seed=1, disk_bps=240 * MB)
    assert 1.9 <= slow.seconds / fast.seconds <= 2.05


def test_a_per_server_cap_slows_recovery_in_proportion() -> None:
    free = simulate(100, 20 * GB, seed=2)
    capped = simulate(100, 20 * GB, seed=2, per_server_bps=40 * MB)
    assert capped.disk_bps == 40 * MB
    assert 2.8 <= capped.seconds / free.seconds <= 3.05


def test_more_disks_recover_the_same_data_faster() -> None:
    small = _mean_seconds(disks=100, lost_bytes=20 * GB)
    large = _mean_seconds(disks=400, lost_bytes=20 * GB)
    assert large < 0.5 * small


@pytest.mark.parametrize("kwargs", [
    {"disks": 100, "lost_bytes": 20 * GB},
    {"disks": 300, "lost_bytes": 30 * GB, "source": "both", "replacement": "balanced"},
    {"disks": 100, "lost_bytes": 40 * GB, "machine_disks": 4, "fill": "balanced", "source": "least-loaded"},
    {"disks": 60, "lost_bytes": 10 * GB, "nic_bps": 0.1e9 / 8, "in_flight": 1},
    {"disks": 50, "lost_bytes": 5 * GB, "machine_disks": 3, "fail": "disk", "io_overhead_s": 0.01},
])
def test_recovery_never_beats_its_lower_bounds(kwargs: dict[str, Any]) -> None:
    r = simulate(seed=5, **kwargs)
    copied = r.lost_bytes  # tracts of lost_bytes / tracts bytes each: exactly the lost bytes
    assert r.seconds >= copied / (r.survivors * r.disk_bps)  # writes alone on every survivor's disk
    assert r.seconds >= r.aggregate_bound_seconds * (1 - 1e-9)  # reads and writes, perfectly spread
    assert r.seconds >= r.busiest_resource_seconds * (1 - 1e-9)  # the busiest disk or NIC
    assert r.busiest_resource_seconds >= r.aggregate_bound_seconds * (1 - 1e-9)


def test_a_slow_nic_becomes_the_bottleneck() -> None:
    disk_bound = simulate(60, 10 * GB, seed=3)
    nic_bound = simulate(60, 10 * GB, seed=3, nic_bps=0.1e9 / 8)  # 12.5 MB/s, a tenth of the disk
    assert nic_bound.seconds > 5 * disk_bound.seconds
    assert nic_bound.seconds >= 10 * GB / (nic_bound.survivors * 0.1e9 / 8)


def test_a_machine_failure_moves_d_times_the_data() -> None:
    d = 5
    one = simulate(100, 20 * GB, d, fail="disk", seed=4)
    whole = simulate(100, d * 20 * GB, d, seed=4)
    assert (one.failed_disks, whole.failed_disks) == (1, d)
    assert whole.tracts == d * one.tracts
    assert 0.8 * d <= whole.lost_rows / one.lost_rows <= 1.2 * d
    assert whole.seconds > 2 * one.seconds  # more to move over about the same survivors...
    assert whole.seconds < d * one.seconds  # ...but spread more evenly, so less than d times as long


def test_one_tract_in_flight_is_slower_than_four() -> None:
    one = _mean_seconds(disks=200, lost_bytes=20 * GB, in_flight=1)
    assert one > 1.3 * _mean_seconds(disks=200, lost_bytes=20 * GB, in_flight=4)


def test_balanced_placement_beats_random() -> None:
    random_ = _mean_seconds(disks=100, lost_bytes=20 * GB)
    balanced = _mean_seconds(disks=100, lost_bytes=20 * GB, fill="balanced", source="least-loaded",
                             replacement="balanced")
    assert balanced < 0.85 * random_


def test_seeded_runs_are_reproducible() -> None:
    def figures(seed: int) -> dict[str, Any]:
        out = asdict(simulate(150, 15 * GB, 3, seed=seed))
        del out["wall_seconds"]
        return out

    assert figures(7) == figures(7)
    assert figures(7) != figures(8)


def test_plan_respects_domains_and_conserves_tracts() -> None:
    n, d = 60, 4
    rng = np.random.default_rng(11)
    plan = plan_recovery(n, 4 * 3 * GB, d, rng=rng)
    failed_machine = {int(x) // d for x in plan.failed}
    assert len(failed_machine) == 1 and len(plan.failed) == d
    per_disk = -(-3 * GB // TRACT_BYTES)
    assert int(plan.tracts.sum()) == d * per_disk
    for (a, b), src, dst in zip(plan.survivors.tolist(), plan.source.tolist(), plan.dest.tolist(), strict=True):
        machines = {a // d, b // d}
        assert len(machines) == 2 and not machines & failed_machine  # two survivors, distinct live domains
        assert src in (a, b)
        assert dst // d not in machines | failed_machine


def _explicit_row_counts(n: int, d: int, rng: random.Random) -> list[int]:
    """Build a whole FDS table the slow way (all pairs + a random third) and count each disk's rows."""
    counts = [0] * n
    for a in range(n):
        for b in range(a + 1, n):
            if a // d == b // d:
                continue
            third = rng.choice([x for x in range(n) if x // d not in (a // d, b // d)])
            for x in (a, b, third):
                counts[x] += 1
    return counts


def test_sampled_lost_rows_match_an_explicit_table() -> None:
    n, d = 40, 2
    rng = random.Random(3)
    explicit = [c for _ in range(4) for c in _explicit_row_counts(n, d, rng)]
    sampled = [len(plan_recovery(n, GB, d, fail="disk", rng=np.random.default_rng(s)).tracts) for s in range(160)]
    assert abs(statistics.fmean(sampled) - statistics.fmean(explicit)) < 1.5
    assert 0.7 < statistics.stdev(sampled) / statistics.stdev(explicit) < 1.4
    balanced = [len(plan_recovery(n, GB, d, fail="disk", fill="balanced", rng=np.random.default_rng(s)).tracts)
                for s in range(20)]
    assert max(balanced) - min(balanced) <= 1


def test_calibrate_cap_recovers_a_known_cap() -> None:
    run: dict[str, Any] = {"disks": 80, "lost_bytes": 8 * GB, "seed": 2}
    target = simulate(**run, per_server_bps=50 * MB).seconds
    cap = calibrate_cap(target, [run])
    assert cap is not None and abs(cap / (50 * MB) - 1) < 0.02
    assert calibrate_cap(target / 100, [run]) is None  # faster than the uncapped disks can go


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--disks", "50", "100", "--lost-gb", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["blocks"][0]["rows"]
    assert [(r["disks"], r["lost_gb"]) for r in rows] == [(50, 5.0), (100, 5.0)]
    assert all(r["fds_seconds"] is None and r["seconds"] > 0 for r in rows)


def test_cli_paper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--paper", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "calibrated to FDS's 1000 disks / 92 GB = 6.2 s" in out
    lines = [line.split() for line in out.splitlines() if line.split()[:1] in (["100"], ["1000"])]
    assert len(lines) == 10  # five scenarios, uncapped and capped
    by_scenario = {(row[0], row[1], row[3]): row for row in lines[5:]}
    assert by_scenario[("100", "1", "47")][-2:] == ["-", "-"]  # the reference gives no figure for it
    assert by_scenario[("100", "1", "92")][-2] == "50.5"
    assert by_scenario[("1000", "7", "655")][-2] == "33.7"
    assert abs(float(by_scenario[("1000", "1", "92")][4]) - 6.2) <= 0.1  # single run: no "± sd"
