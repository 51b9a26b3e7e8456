"""Config validation: bad input stops before anything runs, naming file, key and what is allowed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from research import config
from research.cli import main
from research.errors import ConfigError

GOOD = """
[experiment]
name = "t"
n_workers = [2, 4]
schedulers = ["serial", "threads"]
[workloads.u]
shape = "uniform"
n_tasks = 3
duration_s = 0.01
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_sweep_expands_and_serial_runs_once(tmp_path: Path) -> None:
    exp = config.load(_write(tmp_path, GOOD))
    combos = sorted((t.scheduler, t.n_workers) for t in exp.trials)
    assert combos == [("serial", 1), ("threads", 2), ("threads", 4)]
    assert len({t.trial_id for t in exp.trials}) == 3


def test_keys_are_stable_and_defined_by_the_trial(tmp_path: Path) -> None:
    a = config.load(_write(tmp_path, GOOD)).trials
    b = config.load(_write(tmp_path, GOOD + "\n# a comment changes nothing\n")).trials
    assert [t.key for t in a] == [t.key for t in b]
    c = config.load(_write(tmp_path, GOOD.replace("0.01", "0.02"))).trials
    assert not {t.key for t in a} & {t.key for t in c}


@pytest.mark.parametrize(("patch", "key", "text"), [
    (("schedulers = [\"serial\", \"threads\"]", "schedulers = [\"serial\", \"celeryx\"]"),
     "schedulers", "allowed: serial, threads"),
    (("shape = \"uniform\"", "shape = \"zigzag\""), "shape", "allowed: uniform"),
    (("n_tasks = 3\n", ""), "n_tasks", "missing"),
    (("n_tasks = 3", "n_tasks = \"3\""), "n_tasks", "integer"),
    (("duration_s = 0.01", "duration_s = -0.01"), "duration_s", "negative"),
    (("n_workers = [2, 4]", "n_workers = [0, 4]"), "n_workers", ">= 1"),
    (("n_workers = [2, 4]", "n_workers = []"), "n_workers", "at least one"),
    (("name = \"t\"\n", ""), "name", "missing"),
    (("[workloads.u]", "[workload.u]"), "workload", "allowed: experiment"),
    (("n_workers = [2, 4]", "n_workers = [2, 4]\nrepeat = 2"), "repeat", "allowed: name"),
])
def test_bad_input_names_file_key_and_allowed(tmp_path: Path, patch: tuple[str, str], key: str,
                                              text: str) -> None:
    path = _write(tmp_path, GOOD.replace(*patch))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and text in str(err.value)


def test_scheduler_options_are_checked(tmp_path: Path) -> None:
    bad = GOOD + "\n[scheduler_options.threads]\nchunksize = 2\n"
    with pytest.raises(ConfigError, match="chunksize.*allowed: none"):
        config.load(_write(tmp_path, bad))
    ok = (GOOD.replace("\"threads\"]", "\"mp-map\"]")
          + "\n[scheduler_options.mp-map]\nchunksize = 2\n")
    trials = config.load(_write(tmp_path, ok)).trials
    assert {t.options["chunksize"] for t in trials if t.scheduler == "mp-map"} == {2}


def test_crash_injection_refused_for_in_process_schedulers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crash_ids.*client process"):
        config.load(_write(tmp_path, GOOD + "crash_ids = [1]\n"))


def test_an_option_that_runs_tasks_in_the_client_is_seen_by_the_checks(tmp_path: Path) -> None:
    """dask-local's ``scheduler = "threads"`` runs the tasks in the client under its GIL
    (``Scheduler.traits``): crash injection is refused before anything runs, naming the key
    and the variant, and CPU-bodied threads beyond the cores need no consent (they cannot
    oversubscribe what one interpreter uses); with processes (the default) the reverse."""
    from research.schedulers import REGISTRY, get_scheduler

    def cfg(kind: str, extra: str, n: int = 2) -> str:
        return textwrap.dedent(f"""
            [experiment]
            name = "t"
            n_workers = {n}
            schedulers = ["dask-local"]
            [scheduler_options.dask-local]
            scheduler = ["{kind}"]
            [workloads.u]
            shape = "uniform"
            n_tasks = 3
            duration_s = 0.01
            """) + extra

    with pytest.raises(ConfigError, match=r"crash_ids.*dask-local\[scheduler=threads\].*client"):
        config.load(_write(tmp_path, cfg("threads", "crash_ids = [1]\n")))
    assert config.load(_write(tmp_path, cfg("processes", "crash_ids = [1]\n"))).trials
    many = config.usable_cores() + 1
    assert config.load(_write(tmp_path, cfg("threads", 'body = "cpu"\n', many))).trials
    with pytest.raises(ConfigError, match="allow_oversubscribe"):
        config.load(_write(tmp_path, cfg("processes", 'body = "cpu"\n', many)))
    # Every other adapter's traits are its class attributes, whatever the options.
    for name in REGISTRY:
        cls = get_scheduler(name)
        if name != "dask-local":
            assert cls.traits({}) == cls.traits(None)
            assert (cls.traits().shares_gil, cls.traits().in_process) == (
                cls.shares_gil, cls.in_process), name
    local = get_scheduler("dask-local")
    assert not local.traits({}).in_process and not local.traits(None).shares_gil
    assert local.traits({"scheduler": "synchronous"}).in_process


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(_write(tmp_path, "[experiment\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml")


def test_quick_overrides(tmp_path: Path) -> None:
    text = GOOD.replace("[experiment]", "[experiment]\nrepeats = 3") + textwrap.dedent("""
        [quick.workloads.u]
        n_tasks = 1
        """)
    path = _write(tmp_path, text)
    full, quick = config.load(path), config.load(path, quick=True)
    # serial 3 repeats once (same tasks at 2 and 4 workers), threads 3 x 2 worker counts
    assert len(full.trials) == 3 + 6 and len(quick.trials) == 3
    assert {t.params["n_tasks"] for t in quick.trials} == {1}


def test_quick_scheduler_options_replace_a_sweep(tmp_path: Path) -> None:
    text = GOOD.replace('["serial", "threads"]', '["mp-map"]').replace("[2, 4]", "2") + """
[scheduler_options.mp-map]
chunksize = [1, 2, 3]
start_method = "spawn"
[quick.scheduler_options.mp-map]
chunksize = [2]
"""
    path = _write(tmp_path, text)
    full, quick = config.load(path), config.load(path, quick=True)
    assert sorted(t.options["chunksize"] for t in full.trials) == [1, 2, 3]
    assert [t.options for t in quick.trials] == [{**full.trials[1].options}]
    assert quick.trials[0].options["start_method"] == "spawn"  # the keys not replaced stay
    bad = _write(tmp_path, text.replace("chunksize = [2]", "chunksize = [0]"))
    with pytest.raises(ConfigError, match="chunksize"):
        config.load(bad, quick=True)
    bad = _write(tmp_path, text.replace("[quick.scheduler_options.mp-map]\nchunksize = [2]",
                                        "[quick.scheduler_options]\nmp-map = 3"))
    with pytest.raises(ConfigError, match="expected a table"):
        config.load(bad, quick=True)


def test_cli_exits_nonzero_before_running(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _write(tmp_path, GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("duration_s = 0.01", "duration_s = -1"))
    out = tmp_path / "res"
    assert main(["run", str(good), str(bad), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml [workloads.u]: key 'duration_s'" in err and "negative" in err
    assert not out.exists()  # nothing ran, not even the good config


def test_option_sweeps_become_labelled_variants(tmp_path: Path) -> None:
    text = GOOD.replace("\"threads\"]", "\"mp-map\"]") + textwrap.dedent("""
        [scheduler_options.mp-map]
        chunksize = ["default", 1, 4]
        start_method = "spawn"
        """)
    trials = [t for t in config.load(_write(tmp_path, text)).trials if t.scheduler == "mp-map"]
    labels = sorted({t.label for t in trials})
    assert labels == ["mp-map", "mp-map[chunksize=1]", "mp-map[chunksize=4]"]
    assert {t.options["start_method"] for t in trials} == {"spawn"}
    assert {t.options["chunksize"] for t in trials} == {None, 1, 4}
    assert len({t.trial_id for t in trials}) == len(trials) == 6
    with pytest.raises(ConfigError, match="chunksize"):
        config.load(_write(tmp_path, text.replace("[\"default\", 1, 4]", "[1, -4]")))


def test_cores_and_single_repeat(tmp_path: Path) -> None:
    text = GOOD.replace("n_workers = [2, 4]", "n_workers = \"cores\"\nrepeats = 2\n"
                        "single_repeat = [\"threads\"]")
    trials = config.load(_write(tmp_path, text)).trials
    assert {t.n_workers for t in trials if t.scheduler == "threads"} == {config.usable_cores()}
    assert sorted(t.scheduler for t in trials) == ["serial", "serial", "threads"]
