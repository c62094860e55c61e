"""The degradation study of He et al. 2015 (Fig. 1, Fig. 6, Table 6): resnet_jax/study/runner.py.

    python experiments/degradation.py --workdir=DIR --preset=quick \
        --dataset=image_folder --data_dir=/path/to/cifar10
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, if not installed

from resnet_jax.study import runner  # noqa: E402

if __name__ == '__main__':
  runner.main()
