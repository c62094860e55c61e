"""The degradation study of He et al. 2015 (Fig. 1, Fig. 6, Fig. 7, Table 6):
resnet_jax/study/runner.py with resnet_jax.study.studies.DEGRADATION.

    python experiments/degradation.py --workdir=DIR --preset=quick \
        --dataset=image_folder --data_dir=/path/to/cifar10
"""

from resnet_jax.study import runner, studies

if __name__ == '__main__':
  runner.main(studies.DEGRADATION)
