"""The values of config.dataset and the pipeline that reads each: the in-memory sources
(sources.py) or tf.data streaming (streaming.py). Free of imports, so that choosing a pipeline
never loads TensorFlow."""

TFDS_IN_MEMORY = ('cifar10', 'cifar100')  # small tfds data sets, decoded into memory
IN_MEMORY_DATASETS = (*TFDS_IN_MEMORY, 'image_folder', 'synthetic')
TFDS_STREAMED = {'imagenet2012': 'imagenet2012', 'imagenette': 'imagenette/320px-v2'}  # tfds names
STREAMING_DATASETS = (*TFDS_STREAMED, 'image_folder_stream')
DATASETS = IN_MEMORY_DATASETS + STREAMING_DATASETS
