"""The identity-mappings study of He et al. 2016 (Table 1, Table 2 / Fig. 4, Fig. 6):
resnet_jax/study/runner.py with resnet_jax.study.studies.IDENTITY_MAPPINGS.

    python experiments/identity_mappings.py --workdir=DIR --preset=quick --parallel=2 \
        --dataset=image_folder --data_dir=/path/to/cifar10
"""

from resnet_jax.study import runner, studies

if __name__ == '__main__':
  runner.main(studies.IDENTITY_MAPPINGS)
