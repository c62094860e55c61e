"""Plain, residual, highway and pre-activation networks of He et al. 2015 / 2016."""

from resnet_jax.models.layout import LAYOUTS, convert_layout, layout_of
from resnet_jax.models.registry import MODEL_NAMES, get_model, input_size, parse_name

__all__ = ['LAYOUTS', 'MODEL_NAMES', 'convert_layout', 'get_model', 'input_size', 'layout_of',
           'parse_name']
