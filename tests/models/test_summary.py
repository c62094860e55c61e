"""Multiply-adds against He 2015 Table 1 and hand counts; the summary command's output."""

import json
import subprocess
import sys

import pytest

from resnet_jax.summary import count_macs, count_params, main

# He 2015 Table 1, "FLOPs" (multiply-adds) at 224x224: 1.8, 3.6, 3.8, 7.6, 11.3 x 10^9.
PAPER_MACS = {'resnet18': 1.8e9, 'resnet34': 3.6e9, 'resnet50': 3.8e9, 'resnet101': 7.6e9,
              'resnet152': 11.3e9, 'plain34': 3.6e9}
# torchvision's documented GFLOPS (multiply-adds) of its ResNets, which stride the 3x3 (v1.5).
TORCHVISION_MACS = {'resnet50_v1_5': 4.09e9, 'resnet101_v1_5': 7.80e9,
                    'resnet152_v1_5': 11.51e9}


def cifar_macs(n: int) -> int:
  """Hand count of resnet{6n+2}: every 3x3 conv of a stage costs 32*32*16*16*9 multiply-adds
  (feature maps shrink 4x as widths double), except the two stride-2 convs that halve it."""
  conv = 32 * 32 * 16 * 16 * 9
  stem = 32 * 32 * 16 * 3 * 9
  return stem + (6 * n - 2) * conv + 2 * conv // 2 + 64 * 10


@pytest.mark.parametrize('name', sorted(PAPER_MACS))
def test_imagenet_macs_match_paper_table_1(name):
  assert abs(count_macs(name) / PAPER_MACS[name] - 1) < 0.03


@pytest.mark.parametrize('name', sorted(TORCHVISION_MACS))
def test_v1_5_macs_match_torchvision(name):
  assert abs(count_macs(name) / TORCHVISION_MACS[name] - 1) < 0.01


@pytest.mark.parametrize('n', [1, 3, 9])
def test_cifar_macs_hand_count(n):
  assert count_macs(f'resnet{6 * n + 2}') == cifar_macs(n)
  assert count_macs(f'plain{6 * n + 2}') == cifar_macs(n)
  # option B adds two 1x1 projections: 16x16x32 outputs from 16 channels, 8x8x64 from 32.
  assert count_macs(f'resnet{6 * n + 2}_b') - cifar_macs(n) == 16 * 16 * 32 * 16 + 8 * 8 * 64 * 32


def test_cli_prints_table_and_totals():
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.summary', 'resnet20'],
                          capture_output=True, text=True, check=True, timeout=300)
  lines = result.stdout.splitlines()
  assert lines[0].startswith('Model: resnet20 (32x32x3 input, 10 classes)')
  rows = {line.split()[0]: line.split() for line in lines
          if line.startswith(('stem', 'stage', 'head'))}
  assert list(rows) == ['stem_conv', 'stem_bn'] + [
      f'stage{s}_block{b}' for s in (1, 2, 3) for b in (1, 2, 3)] + ['head']
  assert rows['stem_conv'][2:] == ['32x32x16', '432', '442,368']
  assert rows['stage2_block1'][2] == '16x16x32' and rows['stage3_block3'][2] == '8x8x64'
  assert rows['head'][2:] == ['10', '650', '640']
  assert sum(int(r[3].replace(',', '')) for r in rows.values()) == 269_722
  assert 'Total params: 269,722 (0.27M)' in lines
  assert f'Multiply-adds: {cifar_macs(3):,} (0.04G) per image' in lines


def test_json_output(capsys):
  assert main(['resnet56', '--json']) == 0
  out = json.loads(capsys.readouterr().out)
  assert out == {'name': 'resnet56', 'input_size': 32, 'num_classes': 10, 'params': 853_018,
                 'macs': cifar_macs(9)}
  assert main(['resnet18', '--json']) == 0
  out = json.loads(capsys.readouterr().out)
  assert (out['input_size'], out['num_classes'], out['params']) == (224, 1000, 11_689_512)


def test_count_functions():
  assert count_params('resnet32') == 464_154
  assert count_params('resnet34') == 21_797_672


@pytest.mark.parametrize('name', ['resnet21', 'resnet170_v2', 'nonsense'])
def test_bad_name_exits_2_with_registry_message(name, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main([name])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  message = err.strip().splitlines()[-1]
  assert repr(name) in message and 'valid names' in message
