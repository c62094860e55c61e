"""Pure, jitted train and eval steps: (state, arrays, batch) -> (state, metrics).

One step function serves every data source; how a batch becomes images and
labels is the `prepare` parameter, which each data object of resnet_jax.train.inputs brings
(inputs.prepare_in_memory, inputs.prepare_streamed). Evaluation batches also carry 'mask'
(False on the padding of the last batch).

Metrics are device arrays: {'sums': {...}, 'last': {...}}; sums add up over an
interval (loss * examples, wrong predictions, examples), 'last' keeps the latest
value (learning rate, gradient norms). The loop reads them once per log interval.

Without the loop (e.g. a benchmark on synthetic batches):
    mesh = parallel.make_mesh()
    optimizer = optim.create_optimizer(config.Optim(optimizer='sgd', learning_rate=0.1,
                                                    weight_decay=1e-4, schedule='constant'), 100)
    state = create_train_state(get_model('resnet20'), optimizer.tx, (32, 32, 3), 0, mesh)
    step = compile_train_step(mesh, prepare=inputs.prepare_streamed,
                              learning_rate=optimizer.learning_rate, seed=0)
    batch = parallel.shard_global_batch({'image': x, 'label': y}, parallel.batch_sharding(mesh))
    state, metrics = step(state, {}, batch)  # `state` is donated: use the returned one

Backend: on the CPU (the mesh's devices) the train step builds the model with `stream_barriers`
and `loop_convs` and compiles with CPU_COMPILER_OPTIONS, and `steps_per_call` unrolls its scan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from jax.sharding import Mesh

from resnet_jax import parallel
from resnet_jax.models import layout
from resnet_jax.train import state as state_lib
from resnet_jax.train.state import TrainState

# On the CPU the train step puts barriers on the model's residual stream (`stream_barriers`):
# without them XLA:CPU fuses relu(bn(conv) + shortcut) of every earlier block of a stage into each
# weight-gradient transpose that reads a block's input, recomputing the stream, a cost quadratic in
# depth (ResNet-110 trains 4x slower; benchmarks/RESULTS.md). XLA:CPU removes optimization barriers
# before fusion unless this pass is off.
CPU_COMPILER_OPTIONS = {'xla_disable_hlo_passes': 'cse_barrier_expander'}

Prepare = Callable[[Any, Any, jax.Array | None, bool], tuple[jax.Array, jax.Array]]
Metrics = dict[str, dict[str, jax.Array]]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in at least float32 (bfloat16 logits are widened),
  optionally against smoothed one-hot targets."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(
      logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), targets)


def kernel_grad_norms(grads) -> dict[str, jax.Array]:
  """L2 norm of each conv/dense kernel's gradient, keyed by module path ('stage1_block1/conv1')
  in the unrolled layout, whichever layout the gradients are in (resnet_jax.models.layout): a
  stacked kernel's norms are taken per block, then named by block."""
  norms = {path: _norm(g.astype(jnp.float32), per_block=layout.is_stacked(path[0]))
           for path, g in traverse_util.flatten_dict(grads).items() if path[-1] == 'kernel'}
  unrolled = layout.convert_layout(traverse_util.unflatten_dict(norms), 'unrolled')
  return {path.removesuffix('/kernel'): norm
          for path, norm in traverse_util.flatten_dict(unrolled, sep='/').items()}


def _norm(g: jax.Array, per_block: bool) -> jax.Array:
  """The L2 norm of g, or of each g[i] (one per stacked block)."""
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(per_block, g.ndim))))


def platform(mesh: Mesh) -> str:
  """The backend of the mesh's devices: 'cpu', 'gpu' or 'tpu'."""
  return mesh.devices.flat[0].platform


def uses_stream_barriers(backend: str) -> bool:
  """Whether the train step puts barriers on the model's residual stream and runs the scanned
  blocks' convolutions through loop_conv (resnet_jax/models/loop_conv.py): on XLA:CPU alone,
  where both were measured (benchmarks/RESULTS.md)."""
  return backend == 'cpu'


def with_stream_barriers(apply_fn: Callable, barriers: bool) -> Callable:
  """The `apply` of a clone of apply_fn's module with `stream_barriers` and `loop_convs` set to
  `barriers`, where apply_fn is the bound `apply` of a module with those fields
  (resnet_jax.models.blocks.ResNet); otherwise apply_fn itself."""
  module = getattr(apply_fn, '__self__', None)
  if isinstance(module, nn.Module) and hasattr(module, 'stream_barriers'):
    return module.clone(stream_barriers=barriers, loop_convs=barriers).apply
  return apply_fn


def train_step(
    state: TrainState, arrays, batch, *, prepare: Prepare, learning_rate: Callable,
    seed: int, label_smoothing: float = 0.0, log_grad_norms: bool = False,
    stream_barriers: bool = False,
) -> tuple[TrainState, Metrics]:
  """One SGD step on one global batch; BN statistics are over the global batch.

  `stream_barriers` sets the model's options of that name and `loop_convs` (see
  with_stream_barriers).
  """
  rng = jax.random.fold_in(state_lib.train_key(seed), state.step)
  augment_rng, dropout_rng = jax.random.split(rng)
  images, labels = prepare(arrays, batch, augment_rng, True)
  apply_fn = with_stream_barriers(state.apply_fn, stream_barriers)

  def loss_fn(params):
    logits, updates = apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    loss = cross_entropy(logits, labels, label_smoothing).mean()
    return loss, (logits, updates.get('batch_stats', {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  examples = labels.shape[0]
  last = {'learning_rate': learning_rate(state.opt_state, state.step)}
  if log_grad_norms:
    last['grad_norms'] = kernel_grad_norms(grads)
  metrics = {'sums': {'loss': loss * examples,
                      'wrong': jnp.sum(jnp.argmax(logits, -1) != labels),
                      'examples': jnp.asarray(examples, jnp.int32)},
             'last': last}
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics


def eval_step(state: TrainState, arrays, batch, *, prepare: Prepare, top5: bool = False) -> Metrics:
  """Masked sums of loss and wrong predictions (and top-5 wrong) over one eval batch.

  The model runs as built, without stream barriers: they serve the backward pass.
  """
  images, labels = prepare(arrays, batch, None, False)
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images, train=False)
  mask = batch['mask']
  sums = {'loss': jnp.sum(cross_entropy(logits, labels) * mask),
          'wrong': jnp.sum((jnp.argmax(logits, -1) != labels) & mask),
          'examples': jnp.sum(mask, dtype=jnp.int32)}
  if top5:
    in_top5 = jnp.any(jax.lax.top_k(logits, 5)[1] == labels[:, None], axis=-1)
    sums['wrong_top5'] = jnp.sum(~in_top5 & mask)
  return {'sums': sums, 'last': {}}


def merge_metrics(old: Metrics, new: Metrics) -> Metrics:
  """Sums add up; 'last' values are replaced by the newer ones."""
  return {'sums': jax.tree.map(jnp.add, old['sums'], new['sums']), 'last': new['last']}


def scan_steps(step: Callable, unroll: bool) -> Callable:
  """K train steps in one call with lax.scan over batches stacked as [K, B, ...].

  Unrolled on the CPU: XLA:CPU leaves the convolutions of a while-loop body in their autodiff
  form, which its slow generic path runs (~40x slower; benchmarks/RESULTS.md).
  """
  def multi_step(state, arrays, batches):
    state, metrics = jax.lax.scan(lambda s, b: step(s, arrays, b), state, batches, unroll=unroll)
    return state, {'sums': jax.tree.map(lambda x: x.sum(0), metrics['sums']),
                   'last': jax.tree.map(lambda x: x[-1], metrics['last'])}
  return multi_step


def compile_train_step(
    mesh: Mesh, *, prepare: Prepare, learning_rate: Callable, seed: int,
    label_smoothing: float = 0.0, log_grad_norms: bool = False, steps_per_call: int = 1,
    arrays_sharding: Any = None,
) -> Callable[[TrainState, Any, Any], tuple[TrainState, Metrics]]:
  """The jitted (state, arrays, batch) -> (state, metrics); the input state is donated.

  With steps_per_call = K > 1 every batch leaf has a leading [K] axis and the call
  runs K steps; K = 1 is the plain step on [B]-leading leaves. `arrays_sharding` is the
  data arrays' sharding (a pytree or one sharding; default replicated; with several
  processes in-memory data are sharded over examples).
  """
  backend = platform(mesh)
  barriers = uses_stream_barriers(backend)
  step = functools.partial(
      train_step, prepare=prepare, learning_rate=learning_rate, seed=seed,
      label_smoothing=label_smoothing, log_grad_norms=log_grad_norms, stream_barriers=barriers)
  if steps_per_call > 1:
    step = scan_steps(step, unroll=backend == 'cpu')
  replicated = parallel.replicated(mesh)
  return jax.jit(
      step, donate_argnums=0,
      in_shardings=(replicated, arrays_sharding or replicated,
                    parallel.batch_sharding(mesh, steps_per_call > 1)),
      out_shardings=replicated, compiler_options=CPU_COMPILER_OPTIONS if barriers else None)


def compile_eval_step(mesh: Mesh, *, prepare: Prepare, top5: bool = False,
                      arrays_sharding: Any = None) -> Callable:
  """The jitted (state, arrays, batch) -> metrics for masked evaluation batches."""
  replicated = parallel.replicated(mesh)
  return jax.jit(
      functools.partial(eval_step, prepare=prepare, top5=top5),
      in_shardings=(replicated, arrays_sharding or replicated, parallel.batch_sharding(mesh)),
      out_shardings=replicated)


accumulate = jax.jit(merge_metrics, donate_argnums=0)
