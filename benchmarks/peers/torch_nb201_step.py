"""One NAS-Bench-201 DARTS (or GDAS) search step of the PyTorch reference, timed on this CPU.

The reference: D-X-Y/AutoDL-Projects (the ``xautodl`` package on PyPI),
``xautodl/models/cell_searchs/search_model_darts.py`` ``TinyNetworkDarts``, built as
``exps/NAS-Bench-201-algos/DARTS-V1.py`` builds it (4 nodes, NAS-Bench-201's 5 ops,
affine=False, track_running_stats=False). One step is that script's ``search_func``: a
weight step on a training batch (SGD 0.025, momentum 0.9, weight decay 5e-4, Nesterov,
gradient norm clipped to 5), then an α step on a validation batch (Adam 3e-4, betas
(0.5, 0.999), weight decay 1e-3). Random CIFAR-shaped images. Prints one JSON line.

``--relaxation gdas``: ``search_model_gdas.py`` ``TinyNetworkGDAS`` as
``exps/NAS-Bench-201-algos/GDAS.py`` builds it and steps it (the same two updates; each
edge runs its sampled op only), at its first epoch's temperature, 10.

Not part of jaxnas: run it with an interpreter that has ``torch`` and ``xautodl``
(benchmarks/peers.py says how).
"""
import argparse

from timing import time_steps  # benchmarks/peers/timing.py, beside this file


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--layers', type=int, default=5)
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--warmup', type=int, default=2)
  ap.add_argument('--relaxation', choices=('softmax', 'gdas'), default='softmax')
  a = ap.parse_args()
  import torch
  from torch import nn
  from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts
  from xautodl.models.cell_searchs.search_model_gdas import TinyNetworkGDAS

  torch.manual_seed(0)
  primitives = ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']
  model = TinyNetworkGDAS if a.relaxation == 'gdas' else TinyNetworkDarts
  net = model(a.channels, a.layers, 4, 10, primitives, False, False)
  if a.relaxation == 'gdas':
    net.set_tau(10.0)
  w_opt = torch.optim.SGD(net.get_weights(), 0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
  a_opt = torch.optim.Adam(net.get_alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  net.train()

  def step(train, val):  # DARTS-V1.py search_func: the weights, then α
    net.zero_grad()
    loss_fn(net(train[0])[1], train[1]).backward()
    nn.utils.clip_grad_norm_(net.get_weights(), 5)
    w_opt.step()
    net.zero_grad()
    loss_fn(net(val[0])[1], val[1]).backward()
    a_opt.step()
  time_steps(step, f'AutoDL-Projects {model.__name__} (PyTorch)', a.batch, a.steps, a.warmup)


if __name__ == '__main__':
  main()
