"""The studies one runner serves, as data: each names its config file, its networks and presets,
the paper's numbers and the figures drawn from its runs.

  DEGRADATION        He et al. 2015 sec. 4.2: Fig. 1, Fig. 6, Fig. 7, Table 6
                     (experiments/degradation.py)
  IDENTITY_MAPPINGS  He et al. 2016 secs. 3-4: Table 1 (shortcuts), Table 2 / Fig. 4
                     (activations), Fig. 6 (experiments/identity_mappings.py)

Every preset trains with the paper's batch 128 and lr 0.1 and keeps the shape of its schedule
(lr /10 at 1/2 and 3/4 of training); only the length and the data subsets shrink, and every
figure title and table says by how much (runs.describe).
"""

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from matplotlib.figure import Figure

from resnet_jax.study import figures, identity_figures, papers, responses
from resnet_jax.study.runs import Run, check_cifar, parse_model


@dataclasses.dataclass(frozen=True)
class Preset:
  """One length of a study: the paper's recipe on `steps` iterations (0: the paper's 64k, as the
  study's config file gives them) of a fixed `train_subset` of the training images, tested at
  least `evaluations` times on a fixed `test_subset` of the test images only (0: all)."""

  models: tuple[str, ...]
  steps: int = 0
  train_subset: int = 0
  test_subset: int = 0
  evaluations: int = 0
  log_rows: int = 0


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """A study: `python experiments/<name>.py` trains `config_file`:MODEL for each model of a
  preset, then draws `figures` ({name: function of the runs}) and the table with the paper's
  test errors `paper` (from `paper_source`); each of `analyses` reads the study folder and
  writes its own files (e.g. Fig. 7 from the final checkpoints)."""

  name: str
  title: str
  config_file: str
  presets: Mapping[str, Preset]
  check_model: Callable[[str], object]  # a one-line ValueError for a network it cannot train
  figures: Mapping[str, Callable[[dict[str, list[Run]]], Figure]]
  paper: Mapping[str, float]
  paper_source: str
  analyses: tuple[Callable[[Path], list[Path]], ...] = ()

  @property
  def script(self) -> str:
    return f'experiments/{self.name}.py'

  @property
  def models(self) -> tuple[str, ...]:
    """Every network of the presets, in the order they are listed (tables keep it)."""
    return tuple(dict.fromkeys(model for preset in self.presets.values()
                               for model in preset.models))


FIG6_PAIR = ('plain20', 'plain56', 'resnet20', 'resnet56')
DEGRADATION = StudySpec(
    name='degradation',
    title='The degradation study on CIFAR-10 (He et al. 2015, sec. 4.2)',
    config_file='configs/degradation.py',
    presets={
        'paper': Preset(('plain20', 'plain32', 'plain44', 'plain56',  # Fig. 6 and Table 6
                         'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')),
        # A quarter of sec. 4.2's schedule: the first lr drop at 8k comes after ResNet-56 has
        # caught up with ResNet-20 at lr 0.1 (public logs of the recipe: at about 7k-10k
        # iterations), which both halves of Fig. 6 need. About 17 h on a 2-core CPU, minutes
        # on a GPU.
        'short': Preset(FIG6_PAIR, steps=16_000, test_subset=2000, evaluations=32,
                        log_rows=160),
        # About 20 minutes on a 2-core CPU with --parallel=2: plain-56 above plain-20 in
        # training error (Fig. 1); too short for ResNet-56, which has not left its slow start at
        # lr 0.1 when the first drop comes (experiments/results/degradation/quick_cpu).
        'quick': Preset(FIG6_PAIR, steps=250, train_subset=10_000, test_subset=1000,
                        evaluations=10, log_rows=25),
    },
    check_model=parse_model,
    figures=figures.FIGURES,
    paper=papers.HE2015_TABLE6,
    paper_source='He et al. 2015 Table 6',
    analyses=(responses.write_layer_responses,),
)

TABLE2_UNITS = ('v1', 'bn_after_add', 'relu_before_add', 'relu_preact', 'v2')  # Fig. 4 (a)-(e)
TABLE1_SHORTCUTS = ('scale_shortcut', 'scale_both', 'exclusive_gate_b6', 'shortcut_gate_b0',
                    'shortcut_gate_b6', 'conv_shortcut', 'dropout_shortcut')  # Fig. 2 (b)-(f)
QUICK_DEPTH = 20
QUICK_UNITS = ('v1', 'v2', 'bn_after_add', 'dropout_shortcut')
IDENTITY_MAPPINGS = StudySpec(
    name='identity_mappings',
    title='Identity mappings on CIFAR-10 (He et al. 2016, Tables 1 and 2, Fig. 6)',
    config_file='configs/identity_mappings.py',
    presets={
        'paper': Preset(tuple(f'resnet110_{unit}' for unit in TABLE2_UNITS)
                        + tuple(f'resnet110_{shortcut}' for shortcut in TABLE1_SHORTCUTS)
                        + tuple(f'resnet164_{unit}' for unit in TABLE2_UNITS)
                        + ('resnet1001_v1', 'resnet1001_v2')),  # Table 3; stacked blocks
        # Table 2's five units on ResNet-110, a quarter of the schedule.
        'short': Preset(tuple(f'resnet110_{unit}' for unit in TABLE2_UNITS), steps=16_000,
                        test_subset=2000, evaluations=32, log_rows=160),
        # Under 20 minutes on a 2-core CPU with --parallel=2, at depth QUICK_DEPTH: both ends of
        # Table 2 (original, full pre-activation: Fig. 6's pair), Table 2's worst unit (BN after
        # the addition) and a shortcut Table 1 reports as "fail" (dropout), whose cost shows in
        # training error from the first iterations.
        'quick': Preset(tuple(f'resnet{QUICK_DEPTH}_{unit}' for unit in QUICK_UNITS),
                        steps=300, train_subset=10_000, test_subset=1000, evaluations=10,
                        log_rows=30),
    },
    check_model=check_cifar,
    figures=identity_figures.FIGURES,
    paper=papers.HE2016,
    paper_source='He et al. 2016 Tables 1-3',
)
STUDIES = {study.name: study for study in (DEGRADATION, IDENTITY_MAPPINGS)}
