"""resnet_jax.main that SIGKILLs itself inside orbax's write of one checkpoint step.

    python tests/reliability/crashing_main.py POINT STEP --config=... --workdir=...

POINT 'create': right after orbax made the temporary directory of STEP, before any
array is written; 'finalize': after everything is written, just before the rename
that commits the step. The kill comes from orbax's own (background) code path.
"""

import os
import signal
import sys

from absl import app
from orbax.checkpoint._src.path import atomicity

from resnet_jax import main


def kill_inside_orbax(point: str, step: int) -> None:
  cls = atomicity.AtomicRenameTemporaryPath
  original = getattr(cls, point)

  async def patched(self, *args, **kwargs):
    is_step = self.get_final().name == str(step)
    if point == 'finalize' and is_step:
      os.kill(os.getpid(), signal.SIGKILL)
    result = await original(self, *args, **kwargs)
    if point == 'create' and is_step:
      os.kill(os.getpid(), signal.SIGKILL)
    return result
  setattr(cls, point, patched)


if __name__ == '__main__':
  kill_inside_orbax(sys.argv[1], int(sys.argv[2]))
  app.run(main.main, argv=[sys.argv[0], *sys.argv[3:]])
