"""What both reference harnesses share: random CIFAR-shaped batches, the timed steps and
the JSON line they print."""
import json
import resource
import sys
import time


def time_steps(step, side: str, batch: int, steps: int, warmup: int) -> None:
  """Calls ``step(train_batch, val_batch)`` ``warmup + steps`` times on fresh random
  batches; prints each time to stderr and one JSON line (the median of the last
  ``steps``, the peak RSS) to stdout."""
  import torch
  gen = torch.Generator().manual_seed(0)

  def draw():
    return (torch.randn(batch, 3, 32, 32, generator=gen),
            torch.randint(0, 10, (batch,), generator=gen))
  times = []
  for i in range(warmup + steps):
    train, val = draw(), draw()
    t0 = time.perf_counter()
    step(train, val)
    seconds = time.perf_counter() - t0
    print(f'step {i}: {seconds:.3f} s', file=sys.stderr, flush=True)
    if i >= warmup:
      times.append(seconds)
  times.sort()
  print(json.dumps({'side': side, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                    'step_s': times[len(times) // 2],
                    'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
