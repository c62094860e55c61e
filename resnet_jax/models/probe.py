"""Looking inside a network without running it for real: its variables' shapes, and the calls of
its submodules (what the summary table, the PyTorch interop and the tests read).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict


class Call(NamedTuple):
  """One `__call__` of a flax module."""

  path: tuple[str, ...]  # ('stage1_block1', 'conv1'); () for the network itself
  kind: type  # the module's class, e.g. nn.Conv
  inputs: Any  # the first positional argument
  output: Any

  @property
  def name(self) -> str:
    """The path joined by '/': 'stage1_block1/conv1' ('' for the network itself)."""
    return '/'.join(self.path)


def module_calls(fn: Callable[[], Any]) -> tuple[Any, list[Call]]:
  """fn()'s result and every module `__call__` made while it runs, in the order the calls start
  (a block before its layers). Under jax.jit or jax.eval_shape the recorded values are tracers:
  read them inside the transformed function."""
  calls = []

  def record(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    index = len(calls)
    calls.append(None)  # reserve the slot: sublayers' calls end before this one
    out = next_fun(*args, **kwargs)
    calls[index] = Call(context.module.path, type(context.module), args[0] if args else None, out)
    return out

  with nn.intercept_methods(record):
    result = fn()
  return result, calls


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)


def abstract_init(model: nn.Module, size: int, batch: int = 1) -> tuple[dict, list[Call]]:
  """`model.init` on a batch of size x size x 3 zeros in eval mode, under jax.eval_shape (only
  traced, nothing computed): the variables as jax.ShapeDtypeStruct, nested in the order flax
  creates them (network order, where jax.eval_shape alone would sort the keys), and the module
  calls with jax.ShapeDtypeStruct inputs and outputs."""
  calls, order = [], []

  def init() -> dict:
    x = jnp.zeros((batch, size, size, 3), jnp.float32)
    variables, traced = module_calls(lambda: model.init(jax.random.key(0), x, train=False))
    calls.extend(c._replace(inputs=_abstract(c.inputs), output=_abstract(c.output))
                 for c in traced)
    order.extend(flatten_dict(variables))
    return variables

  flat = flatten_dict(jax.eval_shape(init))
  return unflatten_dict({key: flat[key] for key in order}), calls
