"""benchmarks/compile_depth.py: rows run in children and land in a JSON and a Markdown table, a
row past its timeout is reported as not finished, and bad rows are refused before any work. No
timing is asserted (the CPU is shared)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compile_depth

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'benchmarks' / 'compile_depth.py'


def run_command(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True,
                        cwd=REPO, timeout=600)


def test_tiny_rows_write_json_and_markdown(tmp_path):
  output = tmp_path / 'out' / 'depth.json'
  rows = 'resnet14:unrolled:4:0:1,resnet14:stacked:4:1:1,resnet14:stacked:4:0:0'
  done = run_command(f'--rows={rows}', '--windows=1', '--timeout=300', f'--output={output}')
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(output.read_text())
  rows = report['rows']
  assert [(r['layout'], r['remat'], r['status']) for r in rows] == [
      ('unrolled', False, 'ok'), ('stacked', True, 'ok'), ('stacked', False, 'ok')]
  for row in rows:
    assert row['compile_s'] > 0 and row['lower_s'] > 0
    assert row['memory']['peak_bytes'] > 0 and row['memory']['temp_size_in_bytes'] > 0
    assert row['host_peak_rss_bytes'] > 0
  assert rows[0]['step_ms_per_image'] > 0 and len(rows[0]['windows_ms_per_image']) == 1
  assert 'step_ms_per_image' not in rows[2]
  lines = [l for l in output.with_suffix('.md').read_text().splitlines() if l.startswith('|')]
  assert lines[0] == '| ' + ' | '.join(compile_depth.TABLE_COLUMNS) + ' |'
  assert len(lines) == 2 + 3 and lines[3].startswith('| resnet14 | stacked | 4 | yes | ok |')


def test_a_row_past_its_timeout_is_reported_not_awaited(tmp_path):
  output = tmp_path / 'depth.json'
  done = run_command('--rows=resnet14:stacked:4:0:1', '--timeout=1', f'--output={output}')
  assert done.returncode == 0, done.stderr[-2000:]
  (row,) = json.loads(output.read_text())['rows']
  assert row['status'] == 'did not finish in 1 s' and 'compile_s' not in row


def test_chain_shows_the_loop_layouts_and_loop_conv_keeps_the_canonical_one(tmp_path):
  output = tmp_path / 'chain.json'
  done = run_command('--chain', '--chain_batch=2', '--windows=1', f'--output={output}')
  assert done.returncode == 0, done.stderr[-2000:]
  rows = {r['chain']: r for r in json.loads(output.read_text())['rows']}
  assert list(rows) == ['unrolled, lax conv', 'scan, lax conv', 'scan, loop_conv']
  canonical = ['b01f_01io->b01f']
  assert rows['unrolled, lax conv']['dim_labels'] == canonical
  assert rows['scan, loop_conv']['dim_labels'] == canonical
  assert 'f01b_i01o->01bf' in rows['scan, lax conv']['dim_labels']  # the weight gradient
  assert all(r['grads_relative_error'] < 1e-5 and r['ms'] > 0 for r in rows.values())
  assert output.with_suffix('.md').read_text().count('\n') == 2 + 3


@pytest.mark.parametrize('item, match', [
    ('resnet14:stacked:4:0', 'MODEL:LAYOUT:BATCH:REMAT:STEPS'),
    ('resnet7:stacked:4:0:1', 'resnet7'),
    ('resnet14:scanned:4:0:1', "layout 'scanned'"),
    ('resnet14:stacked:0:0:1', 'BATCH must be'),
    ('resnet14:stacked:4:2:1', 'REMAT 0 or 1'),
])
def test_bad_rows_are_refused(item, match):
  with pytest.raises(ValueError, match=match):
    compile_depth.parse_row(item)


def test_bad_flags_exit_before_any_work(tmp_path):
  done = run_command('--rows=resnet14:stacked:4:0:1', f'--output={tmp_path / "x.csv"}')
  assert done.returncode != 0 and 'must end in .json' in done.stderr
  assert not list(tmp_path.iterdir())
