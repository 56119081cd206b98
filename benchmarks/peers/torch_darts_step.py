"""One DARTS-space search step of the PyTorch reference, timed on this CPU.

The reference: khanrc/pt.darts (not a package: ``--src`` is a checkout of it), its
``models/search_cnn.py`` ``SearchCNNController`` (C=16, 8 cells, 4 nodes, stem x3) and
``architect.py`` ``Architect``, stepped as its ``search.py`` ``train`` loop: the α step
(Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3) on a validation batch, then the
weight step (SGD 0.025, momentum 0.9, weight decay 3e-4, gradient norm clipped to 5) on
a training batch. ``--order 2``: the α gradient by its ``unrolled_backward`` (DARTS'
finite-difference second order); ``--order 1``: ∂L_val/∂α at the current weights (the
first-order DARTS pt.darts has no switch for). Random CIFAR-shaped images. Prints one
JSON line.
"""
import argparse
import sys

from timing import time_steps  # benchmarks/peers/timing.py, beside this file


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--src', required=True, help='a checkout of khanrc/pt.darts')
  ap.add_argument('--order', type=int, choices=(1, 2), default=1)
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--layers', type=int, default=8)
  ap.add_argument('--steps', type=int, default=4)
  ap.add_argument('--warmup', type=int, default=1)
  a = ap.parse_args()
  sys.path.insert(0, a.src)
  import torch
  from torch import nn
  from architect import Architect
  from models.search_cnn import SearchCNNController

  torch.manual_seed(0)
  # device_ids=[0]: the single-device forward (with none, it scatters over zero GPUs)
  model = SearchCNNController(3, a.channels, 10, a.layers, nn.CrossEntropyLoss(), device_ids=[0])
  w_opt = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
  a_opt = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
  architect = Architect(model, 0.9, 3e-4)
  model.train()

  def step(train, val):  # search.py train(): α, then the weights
    a_opt.zero_grad()
    if a.order == 2:
      architect.unrolled_backward(*train, *val, 0.025, w_opt)
    else:
      grads = torch.autograd.grad(model.loss(*val), list(model.alphas()))
      for p, g in zip(model.alphas(), grads):
        p.grad = g
    a_opt.step()
    w_opt.zero_grad()
    model.loss(*train).backward()
    nn.utils.clip_grad_norm_(model.weights(), 5.0)
    w_opt.step()
  time_steps(step, f'khanrc/pt.darts order {a.order} (PyTorch)', a.batch, a.steps, a.warmup)


if __name__ == '__main__':
  main()
