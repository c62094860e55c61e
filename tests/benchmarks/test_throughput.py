"""benchmarks/throughput.py: the command writes a well-formed JSON and Markdown table, and refuses
bad flags before any work. No timing is asserted (the CPU is shared)."""

import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import pytest

from benchmarks import throughput

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'benchmarks' / 'throughput.py'


def run_command(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True,
                        cwd=REPO, timeout=600)


def table_rows(markdown: str) -> list[list[str]]:
  lines = [line for line in markdown.splitlines() if line.startswith('|')]
  return [[cell.strip() for cell in line.strip('|').split('|')] for line in lines]


def test_tiny_run_writes_json_and_markdown(tmp_path):
  output = tmp_path / 'out' / 'bench.json'
  done = run_command('--models=resnet8', '--batch_sizes=8', '--precisions=float32,bfloat16',
                     '--steps=2', '--warmup=1', '--windows=2', f'--output={output}')
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(output.read_text())
  env = report['environment']
  assert env['backend'] == jax.default_backend() and env['peer'] is True
  assert {'jax', 'flax', 'torch'} <= set(env['versions'])
  settings = [(r['model'], r['batch_size'], r['precision'], r['image_size'], r['steps_per_call'])
              for r in report['rows']]
  assert settings == [('resnet8', 8, 'float32', 32, 1), ('resnet8', 8, 'bfloat16', 32, 1)]
  for row in report['rows']:
    ours, peer = row['ours'], row['peer']
    for bench in (ours, peer):
      assert bench['train_images_per_s'] == pytest.approx(8 / (bench['train_step_ms'] / 1e3))
      assert bench['eval_images_per_s'] > 0
      assert len(bench['train_windows_ms']) == 2 and bench['memory_source']
    # Ours times XLA's compile of the step: far longer than running it once.
    assert ours['compile_s'] > ours['train_step_ms'] / 1e3
    # The peer's is its first calls' time beyond the steady state (warmup=1: one call).
    assert peer['compile_s'] == pytest.approx(
        max(0.0, peer['extra']['warmup_s'] - peer['train_step_ms'] / 1e3))
    assert row['train_ratio'] == pytest.approx(
        ours['train_images_per_s'] / peer['train_images_per_s'])
    assert ours['extra']['xla_buffers_bytes'] > 0
    assert peer['extra']['torch_compile'] == (peer['extra']['device'] == 'cuda')  # auto

  header, rule, *rows = table_rows(output.with_suffix('.md').read_text())
  assert header == list(throughput.TABLE_COLUMNS) and set(rule) == {'---'}
  assert len(rows) == 2
  ratio = header.index('train ours/peer')
  for row, data in zip(rows, report['rows']):
    assert row[:5] == ['resnet8', '32x32', '8', data['precision'], '1']
    assert float(row[ratio]) == pytest.approx(data['train_ratio'], abs=0.006)


def test_table_without_peer_leaves_peer_columns_empty():
  ours = throughput.Bench(
      train_images_per_s=1000.0, eval_images_per_s=3000.0, train_step_ms=128.0,
      eval_step_ms=42.7, train_windows_ms=[128.0], compile_s=2.0, compile_source='x',
      peak_memory_bytes=3 * throughput.MIB, memory_source='host')
  row = throughput.row_for(throughput.Setting('resnet20', 128, 'float32'), ours, None)
  header, _, cells = table_rows(throughput.markdown_table([row]))
  values = dict(zip(header, cells))
  assert values['ours train img/s'] == '1,000' and values['ours peak MiB'] == '3'
  assert values['peer train img/s'] == values['train ours/peer'] == '-'
  assert row['train_ratio'] is None


@pytest.mark.parametrize('models, batches, precisions, match', [
    (['resnet7'], [], ['float32'], 'resnet7'),
    (['resnet8'], ['0'], ['float32'], 'batch_sizes'),
    (['resnet8'], ['8'], ['float16'], 'precisions'),
])
def test_bad_settings_raise(models, batches, precisions, match):
  with pytest.raises(ValueError, match=match):
    throughput.settings_from(models, batches, precisions)


def test_settings_rows_keep_their_order():
  settings = throughput.parse_settings(['resnet56:128:bfloat16:20', 'resnet20:64:float32:1'])
  assert settings == [throughput.Setting('resnet56', 128, 'bfloat16', 20),
                      throughput.Setting('resnet20', 64, 'float32', 1)]


@pytest.mark.parametrize('item, match', [
    ('resnet56:128:bfloat16', r'--settings=resnet56:128:bfloat16: write MODEL:BATCH:PRECISION:'),
    ('resnet56:128:float16:1', 'precisions'),
    ('resnet56:128:float32:x', 'steps_per_call'),
])
def test_bad_settings_rows_raise(item, match):
  with pytest.raises(ValueError, match=match):
    throughput.parse_settings([item])


def test_default_batch_sizes_follow_the_papers():
  settings = throughput.settings_from(['resnet20', 'resnet50_v1_5'], [], ['float32'])
  assert [(s.model, s.batch_size, s.image_size) for s in settings] == [
      ('resnet20', 128, 32), ('resnet20', 1024, 32), ('resnet50_v1_5', 256, 224)]


def test_command_refuses_a_model_without_peer_before_any_work(tmp_path):
  output = tmp_path / 'bench.json'
  done = run_command('--models=resnet20_b', '--framework=both', f'--output={output}')
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: no PyTorch peer for model 'resnet20_b'")
  assert '--framework=jax' in last
  assert 'Traceback' not in done.stderr and not output.exists()


def test_time_calls_runs_warmup_then_windows_and_syncs_once_per_window(monkeypatch):
  # a fake clock: warm-up calls take 0.5 s each, the calls of the windows 1, 2, 3 and 10 s each
  clock, calls, syncs, per_window = [0.0], [], [], (1.0, 2.0, 3.0, 10.0)
  monkeypatch.setattr(throughput, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0]))

  def call():
    calls.append(1)
    clock[0] += 0.5 if len(calls) <= 2 else per_window[(len(calls) - 3) // 3]
    return len(calls)

  timing = throughput.time_calls(call, syncs.append, warmup=2, steps=3, windows=4)
  assert len(calls) == 2 + 3 * 4
  assert syncs == [2, 5, 8, 11, 14]  # after the warm-up, then at the end of each window
  assert timing.warmup_s == 1.0 and timing.windows_s == list(per_window)
  assert timing.median_s == 2.5  # the median window, not the mean (4.0)