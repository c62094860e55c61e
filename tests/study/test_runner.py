"""The degradation runner: flags, presets, and a tiny study that trains, is cut, skips, resumes."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_jax.study import figures, is_finished, read_metrics, runner

REPO = Path(__file__).resolve().parents[2]
TINY_STEPS = 120  # RESNET_JAX_QUICK_STEPS: log every 4, evaluate and checkpoint every 40 steps
TINY_FLAGS = ["--preset=quick", "--models=plain8,resnet8", "--dataset=synthetic",
              "--config.synthetic_size=256", "--config.val_split=64", "--config.batch_size=16",
              "--config.eval_batch_size=64", "--config.log_grad_norms=True"]


@pytest.mark.parametrize("flags, message", [
    (["--preset=fast"], r"unknown --preset='fast': use one of paper, quick"),
    (["--models=plain20,resnet21"], r"unknown model 'resnet21': use plain<d> or resnet<d> with d"),
    (["--models=resnet50"], r"unknown model 'resnet50'"),
    (["--seeds=0"], r"--seeds=0: give at least 1 seed per model"),
    (["--seeds=two"], r"argument --seeds: invalid int value: 'two' \(see --help\)"),
    (["--parallel=0"], r"--parallel=0: give at least 1 run at a time"),
    (["--epochs=3"], r"unknown flags \['--epochs=3'\]"),
    (["--config.seed"], r"unknown flags \['--config.seed'\]: use .* --config.FIELD=VALUE"),
])
def test_bad_flags_are_one_line_errors_before_any_run(tmp_path, flags, message):
  workdir = tmp_path / "study"
  with pytest.raises(SystemExit) as error:
    runner.main([f"--workdir={workdir}", *flags])
  text = str(error.value)
  assert "\n" not in text and text.startswith("degradation: ")
  assert re.search(message, text), text
  assert not workdir.exists()


def test_bad_quick_steps_is_an_error_before_any_run(tmp_path, monkeypatch):
  monkeypatch.setenv(runner.QUICK_STEPS_ENV, "ten")
  with pytest.raises(SystemExit, match=r"^degradation: RESNET_JAX_QUICK_STEPS='ten': give a whole"):
    runner.main([f"--workdir={tmp_path / 'study'}", "--preset=quick"])
  assert not (tmp_path / "study").exists()


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
  result = subprocess.run([sys.executable, "experiments/degradation.py",
                           f"--workdir={tmp_path / 'study'}", "--models=plain21"],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "degradation: unknown model 'plain21': use plain<d> or resnet<d> with d = 6n+2 "
      "(e.g. plain20, resnet56)"]
  assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("steps", [300, 640])
def test_quick_preset_keeps_the_shape_of_the_paper_schedule(monkeypatch, steps):
  monkeypatch.setenv(runner.QUICK_STEPS_ENV, str(steps))
  quick = runner.preset_overrides("quick", "resnet110")
  # the paper: 64k steps, lr /10 at 32k and 48k, 400 warm-up steps for ResNet-110 (sec. 4.2)
  assert quick["num_train_steps"] == steps
  assert quick["lr_boundaries"] == (steps // 2, steps * 3 // 4)
  assert quick["warmup_steps"] == round(400 * steps / 64000)
  assert quick["checkpoint_every_steps"] % quick["log_every_steps"] == 0
  assert runner.preset_overrides("paper", "resnet110") == {}
  monkeypatch.delenv(runner.QUICK_STEPS_ENV)
  assert runner.preset_overrides("quick", "plain56")["num_train_steps"] == runner.QUICK_STEPS == 300


def test_jobs_run_every_model_and_seed_in_its_own_workdir(tmp_path):
  study = runner.parse_flags([f"--workdir={tmp_path}", "--seeds=2", "--preset=quick",
                              "--models=plain20,resnet20,plain20", "--dataset=image_folder",
                              "--data_dir=/data/cifar10", "--config.batch_size=32"])
  jobs = runner.make_jobs(study)
  assert [(job.model, job.seed) for job in jobs] == [
      ("plain20", 0), ("resnet20", 0), ("plain20", 1), ("resnet20", 1)]
  job = jobs[3]
  assert job.run_dir == tmp_path / "resnet20" / "seed1"
  assert job.command[1:7] == ("-m", "resnet_jax.main", "--config=configs/degradation.py:resnet20",
                              f"--workdir={tmp_path / 'resnet20' / 'seed1'}", "--config.seed=1",
                              "--config.num_train_steps=300")
  assert "--config.lr_boundaries=(150, 225)" in job.command
  assert job.command[-3:] == ("--config.dataset=image_folder", "--config.data_dir=/data/cifar10",
                              "--config.batch_size=32")
  assert "--config.batch_size=64" not in job.command  # the user's flag replaces the preset's
  paper = runner.make_jobs(runner.parse_flags([f"--workdir={tmp_path}"]))
  assert [job.model for job in paper] == list(runner.degradation.PAPER_MODELS)
  assert all(not arg.startswith("--config.num_train_steps") for job in paper for arg in job.command)


def test_failed_runs_are_reported_while_the_others_finish(tmp_path, capsys):
  finish = ("import pathlib, sys; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True); "
            "(run / 'metrics.jsonl').write_text('{\"step\": 1, \"event\": \"end\"}\\n')")
  good = runner.Job("resnet8", 0, tmp_path / "resnet8" / "seed0",
                    (sys.executable, "-c", finish, str(tmp_path / "resnet8" / "seed0")))
  bad = runner.Job("plain8", 0, tmp_path / "plain8" / "seed0", (sys.executable, "-c", "exit(3)"))
  assert runner.run_jobs([bad, good], parallel=2) == [
      f"plain8/seed0 (exit 3, see {tmp_path / 'plain8' / 'seed0.log'})"]
  assert is_finished(good.run_dir) and "resnet8/seed0: done" in capsys.readouterr().out
  assert runner.run_jobs([good], parallel=1) == []  # finished: skipped, not run again
  assert "resnet8/seed0: finished, skipped" in capsys.readouterr().out


def _runner(workdir: Path) -> subprocess.Popen:
  env = dict(os.environ, **{runner.QUICK_STEPS_ENV: str(TINY_STEPS)})
  command = [sys.executable, "experiments/degradation.py", f"--workdir={workdir}", *TINY_FLAGS]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _train_steps(path: Path) -> list[int]:
  return [row["step"] for row in read_metrics(path) if "train_loss" in row]


def test_tiny_study_trains_is_cut_then_skips_the_finished_run_and_resumes_the_other(tmp_path):
  workdir = tmp_path / "study"
  # 1. plain8 trains to the end; resnet8 is cut once its first checkpoint (step 40) is complete
  # (orbax renames a checkpoint folder to its step when the save has finished).
  first = _runner(workdir)
  resnet_metrics = workdir / "resnet8" / "seed0" / "metrics.jsonl"
  checkpoint = workdir / "resnet8" / "seed0" / "checkpoints" / "40"
  deadline = time.monotonic() + 240
  while not checkpoint.is_dir() and first.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  first.send_signal(signal.SIGTERM)
  out, err = first.communicate(timeout=120)
  assert first.returncode == 1 and err.strip().splitlines()[-1] == (
      "degradation: interrupted; run the same command again to resume"), err
  assert read_metrics(workdir / "plain8" / "seed0" / "metrics.jsonl")[-1]["event"] == "end"
  assert 40 <= _train_steps(resnet_metrics)[-1] < TINY_STEPS
  assert read_metrics(resnet_metrics)[-1].get("event") != "end"

  # 2. The same command skips plain8 (not launched again) and resumes resnet8 from its checkpoint.
  plain_log = (workdir / "plain8" / "seed0.log").read_text()
  second = _runner(workdir)
  out, err = second.communicate(timeout=300)
  assert second.returncode == 0, err
  assert "plain8/seed0: finished, skipped" in out
  assert "resnet8/seed0: resume (logged up to step" in out
  assert (workdir / "plain8" / "seed0.log").read_text() == plain_log
  rows = read_metrics(resnet_metrics)
  assert rows[-1]["event"] == "end"
  assert [row["step"] for row in rows if row.get("event") == "resume"] == [40]
  # rows logged past the checkpoint were dropped and logged again, once
  assert _train_steps(resnet_metrics) == list(range(4, TINY_STEPS + 1, 4))

  # 3. Every figure and both tables, drawn from the metrics files.
  for name in figures.FIGURES:
    assert (workdir / "figures" / f"{name}.png").stat().st_size > 0
    assert (workdir / "figures" / f"{name}.svg").stat().st_size > 0
  with open(workdir / "results.csv") as f:
    table = {row["model"]: row for row in csv.DictReader(f)}
  for model in ("plain8", "resnet8"):
    rows = read_metrics(workdir / model / "seed0" / "metrics.jsonl")
    final_test = [row["test_error"] for row in rows if "test_error" in row][-1]
    assert float(table[model]["test_error_mean"]) == pytest.approx(100 * final_test, abs=1e-4)
  assert "| resnet8 | 1 |" in (workdir / "results.md").read_text()

  # 4. run_info.json: one record per invocation.
  info = json.loads((workdir / "run_info.json").read_text())
  assert len(info["invocations"]) == 2
  last = info["invocations"][-1]
  assert last["command"].startswith("python experiments/degradation.py --workdir=")
  assert "--models=plain8,resnet8" in last["command"]
  assert last["environment"] == {runner.QUICK_STEPS_ENV: str(TINY_STEPS)}
  assert len(last["git"]["commit"]) == 40 and last["device"]["backend"] == "cpu"
  assert {"jax", "flax", "optax", "numpy"} <= set(last["versions"])
  assert last["runs"]["resnet8/seed0"].startswith(
      "-m resnet_jax.main --config=configs/degradation.py:resnet8 --workdir=")


def test_plot_only_without_runs_is_a_one_line_error(tmp_path):
  with pytest.raises(SystemExit, match=r"^degradation: no runs in .*metrics.jsonl$"):
    runner.main([f"--workdir={tmp_path / 'missing'}", "--plot-only"])
  assert not (tmp_path / "missing").exists()


def test_plot_only_redraws_without_training(fake_study):
  workdir, _ = fake_study(seeds=1)
  runner.main([f"--workdir={workdir}", "--plot-only"])
  assert (workdir / "results.md").exists() and (workdir / "figures" / "figure6.svg").exists()
  assert not (workdir / "run_info.json").exists()
