"""The tables' statistics (issue 39, the rliable protocol): mean ± sample std (ddof=1) over seeds, and the IQM with
a 95% stratified bootstrap CI, reproducible byte for byte. Result files are written as benchmark/table.py writes them:
`{results-dir}/{env}/{row}/{task}__seed{N}.json`."""


import numpy as np
import pytest
from scipy.stats import trim_mean

from benchmark import plot
from test_benchmark_harness import fake_result as write_result

LEVELS = ("train", "heldout", "rephrase", "compose", "hard")
# success in %, seeds 1-4 x the five levels: a permutation of 0..19, so the IQM (the mean of the middle half, 5..14)
# is 9.5 by hand
CLEVR = {
    1: (12, 3, 17, 8, 0),
    2: (5, 19, 1, 14, 9),
    3: (16, 7, 11, 2, 18),
    4: (4, 13, 6, 10, 15),
}
PHRASE = "mean ± sample std over {n} seeds; IQM with 95% stratified bootstrap CI (rliable)"


def cells(text: str, prefix: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def header(text: str) -> list[str]:
    return cells(text, "| Method")


def parse_iqm(cell: str) -> tuple[float, float, float]:
    point, _, interval = cell.partition(" [")
    low, high = interval.rstrip("]").split(", ")
    return float(point), float(low), float(high)


@pytest.fixture
def clevr_results(tmp_path):
    for seed, values in CLEVR.items():
        write_result(tmp_path, "clevr", "ppo", "CLEVR-Robot-v0", seed, {lv: v / 100 for lv, v in zip(LEVELS, values)})
    # a row with one seed: the mean alone, no spread, no interval
    write_result(tmp_path, "clevr", "lago", "CLEVR-Robot-v0", 1, {lv: 0.5 for lv in LEVELS})
    return tmp_path


def test_clevr_sample_std_and_iqm(clevr_results):
    table_path, _ = plot.make_report(clevr_results)
    text = table_path.read_text()
    assert PHRASE.format(n=4) in text
    head = header(text)
    ppo = cells(text, "| PPO (beta = 0)")
    assert len(ppo) == len(head) and ppo[1] == "4"
    # held-out goals 3, 19, 7, 13: mean 10.5, squared deviations 147, sample std sqrt(147 / 3) = 7.0 (population 6.1)
    heldout = ppo[head.index("Success, held-out goals (%)")]
    assert heldout == "10.5 ± 7.0"
    assert np.std([3, 19, 7, 13], ddof=1) == pytest.approx(7.0)
    # every level's cell: mean ± np.std(ddof=1) over the seeds
    for i, level in enumerate(LEVELS):
        values = [CLEVR[s][i] for s in CLEVR]
        column = head.index(f"Success, {plot.LEVEL_TITLES.get(level, level)} (%)")
        assert ppo[column] == f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"
    # the mean over levels per seed: 8.0, 9.6, 10.8, 9.6 -> 9.5 ± 1.1 (sample; the population std is 1.0)
    per_seed = [np.mean(v) for v in CLEVR.values()]
    assert ppo[head.index("Mean over levels (%)")] == "9.5 ± 1.1"
    assert np.std(per_seed, ddof=1) == pytest.approx(1.1489, abs=1e-4)
    # IQM over the seeds x levels matrix: the middle ten of 0..19, (5 + ... + 14) / 10 = 9.5
    iqm, low, high = parse_iqm(ppo[head.index("IQM [95% CI] (%)")])
    assert iqm == 9.5 == pytest.approx(trim_mean(np.array(list(CLEVR.values())), 0.25, axis=None))
    assert low <= iqm <= high and low < high
    # one seed: no ±, no interval
    lago = cells(text, "| LaGO (tiny-random)")
    assert lago[1] == "1" and "±" not in "".join(lago) and lago[head.index("IQM [95% CI] (%)")] == "50.0"


def test_table_is_reproducible_and_leaves_numpy_alone(clevr_results):
    first = plot.make_report(clevr_results)[0].read_text()
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    second = plot.make_report(clevr_results)[0].read_text()
    assert np.random.rand(3).tolist() == expected.tolist()  # the bootstrap restored numpy's global generator
    assert first == second
    scores = np.array(list(CLEVR.values())) / 100
    assert plot.iqm_ci(scores) == plot.iqm_ci(scores)
    iqm, low, high = plot.iqm_ci(scores)
    assert iqm == pytest.approx(0.095) and low <= iqm <= high


def test_metaworld_tasks_and_levels(tmp_path):
    # tasks table: seeds x tasks; reach 20, 40, 90 and push 0, 10, 30 (%)
    success = {"reach-v3": (0.2, 0.4, 0.9), "push-v3": (0.0, 0.1, 0.3)}
    for i, (task, values) in enumerate(success.items()):
        for seed, s in zip((1, 2, 3), values):
            write_result(tmp_path, "metaworld", "ppo", task, seed, {task: s}, task_index=i)
    text = plot.markdown(plot.load_results(tmp_path))
    assert PHRASE.format(n=3) in text and "seeds x tasks" in text
    head, ppo = header(text), cells(text, "| PPO (beta = 0)")
    # per-seed means 10, 25, 60: 31.7 ± 25.7 (sample std)
    per_seed = np.mean(list(success.values()), axis=0) * 100
    assert ppo[head.index("Mean (%)")] == f"{per_seed.mean():.1f} ± {np.std(per_seed, ddof=1):.1f}" == "31.7 ± 25.7"
    assert ppo[head.index("reach-v3 (%)")] == "50.0 ± 36.1"  # 20, 40, 90: sample std sqrt(2600 / 2)
    # IQM of 0, 10, 20, 30, 40, 90: the middle four, 25.0
    iqm, low, high = parse_iqm(ppo[head.index("IQM [95% CI] (%)")])
    assert iqm == 25.0 and low <= iqm <= high

    # levels table: a level's success is the mean over its tasks; the IQM is over seeds x levels
    levels_dir = tmp_path / "levels"
    tasks = {"reach-v3": "demonstrated", "push-v3": "demonstrated", "reach-v3:rephrase": "rephrase"}
    for i, (task, level) in enumerate(tasks.items()):
        for seed in (1, 2, 3, 4):
            write_result(levels_dir, "metaworld", "lago", task, seed, {task: 0.1 * seed + 0.2 * i}, level=level)
    text = plot.markdown(plot.load_results(levels_dir))
    assert PHRASE.format(n=4) in text and "seeds x levels" in text
    head, lago = header(text), cells(text, "| LaGO (tiny-random)")
    demonstrated = [100 * (0.1 * s + 0.1) for s in (1, 2, 3, 4)]  # (0.1 s + (0.1 s + 0.2)) / 2
    rephrase = [100 * (0.1 * s + 0.4) for s in (1, 2, 3, 4)]
    assert (
        lago[head.index("demonstrated (%)")]
        == "35.0 ± 12.9"
        == (f"{np.mean(demonstrated):.1f} ± {np.std(demonstrated, ddof=1):.1f}")
    )
    iqm, low, high = parse_iqm(lago[head.index("IQM [95% CI] (%)")])
    # 8 values 20, 30, 40, 50 | 50, 60, 70, 80: the middle four 40, 50, 50, 60 -> 50.0
    assert iqm == 50.0 == pytest.approx(100 * trim_mean(np.array([demonstrated, rephrase]).T / 100, 0.25, axis=None))
    assert low <= iqm <= high
    assert header(text.split("Per task:")[1]).count("IQM [95% CI] (%)") == 0  # the per-task table has none


def test_late_rise_is_the_last_quarter_minus_the_third():
    """Training success at steps 10..200 (total 200): the third quarter (110..150) averages 0.3, the last (160..200)
    0.5, so the run rose 20 points at its end; a run whose curve stops before its last quarter has no rise."""
    steps = list(range(10, 201, 10))
    values = [0.1] * 10 + [0.2, 0.4, 0.3, 0.3, 0.3] + [0.4, 0.6, 0.5, 0.5, 0.5]
    result = {"total_timesteps": 200, "curve": {"steps": steps, "values": values}}
    assert plot.late_rise(result) == pytest.approx(0.2)
    assert plot.late_rise({"total_timesteps": 400, "curve": {"steps": steps, "values": values}}) is None
    assert plot.late_rise({"total_timesteps": 200}) is None
