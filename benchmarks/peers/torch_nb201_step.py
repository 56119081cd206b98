"""One NAS-Bench-201 DARTS search step of the PyTorch reference, timed on this CPU.

The reference: D-X-Y/AutoDL-Projects (the ``xautodl`` package on PyPI),
``xautodl/models/cell_searchs/search_model_darts.py`` ``TinyNetworkDarts``, built as
``exps/NAS-Bench-201-algos/DARTS-V1.py`` builds it (4 nodes, NAS-Bench-201's 5 ops,
affine=False, track_running_stats=False). One step is that script's ``search_func``: a
weight step on a training batch (SGD 0.025, momentum 0.9, weight decay 5e-4, Nesterov,
gradient norm clipped to 5), then an α step on a validation batch (Adam 3e-4, betas
(0.5, 0.999), weight decay 1e-3). Random CIFAR-shaped images. Prints one JSON line.

Not part of jaxnas: run it with an interpreter that has ``torch`` and ``xautodl``
(benchmarks/peers.py says how).
"""
import argparse
import json
import resource
import sys
import time


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--layers', type=int, default=5)
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--warmup', type=int, default=2)
  a = ap.parse_args()
  import torch
  from torch import nn
  from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

  torch.manual_seed(0)
  primitives = ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']
  net = TinyNetworkDarts(a.channels, a.layers, 4, 10, primitives, False, False)
  w_opt = torch.optim.SGD(net.get_weights(), 0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
  a_opt = torch.optim.Adam(net.get_alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  gen = torch.Generator().manual_seed(0)

  def batch():
    return (torch.randn(a.batch, 3, 32, 32, generator=gen),
            torch.randint(0, 10, (a.batch,), generator=gen))

  net.train()
  times = []
  for i in range(a.warmup + a.steps):
    (xt, yt), (xv, yv) = batch(), batch()
    t0 = time.perf_counter()
    net.zero_grad()
    loss_fn(net(xt)[1], yt).backward()
    nn.utils.clip_grad_norm_(net.get_weights(), 5)
    w_opt.step()
    net.zero_grad()
    loss_fn(net(xv)[1], yv).backward()
    a_opt.step()
    seconds = time.perf_counter() - t0
    print(f'step {i}: {seconds:.3f} s', file=sys.stderr, flush=True)
    if i >= a.warmup:
      times.append(seconds)
  times.sort()
  print(json.dumps({'side': 'AutoDL-Projects TinyNetworkDarts (PyTorch)', 'torch': torch.__version__,
                    'threads': torch.get_num_threads(), 'step_s': times[len(times) // 2],
                    'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


if __name__ == '__main__':
  main()
