"""The options of a registered function (an estimator, a relaxation, a proxy): their
limits, recipes and binding. Pure data and checks, for the core modules
(:mod:`jaxnas.hypergrad`, :mod:`jaxnas.relax`, :mod:`jaxnas.proxies`) to declare their
options with, beside the code they configure, without importing the configuration
framework (:mod:`jaxnas.config`, which reads them).

An option is a keyword-only parameter of the entry's function, its default in the
signature and its limits in ``Annotated[type, Limits(...)]`` (:func:`signature_options`);
:func:`bind_options` checks given values and fills in the defaults.
"""
from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Callable, Mapping, NamedTuple


class Limits(NamedTuple):
  """The help and the limits of a setting. ``min``/``max`` are inclusive bounds,
  ``gt``/``lt`` exclusive ones; ``choices`` the allowed values (or a function
  returning them, read when the value is checked, so that a registry can grow
  after import); ``check`` a function returning an error message, or None when
  the value is fine."""
  help: str = ''
  min: float | None = None
  gt: float | None = None
  max: float | None = None
  lt: float | None = None
  choices: Callable[[], Any] | tuple | None = None
  check: Callable[[Any], str | None] | None = None


class Setting(NamedTuple):
  """A recipe's value for one config leaf, and where it comes from (repository and file,
  or paper section). ``of_epochs``: the value is an epoch count of a run of that many
  epochs, and a run of E epochs gets ``round(value · E / of_epochs)``."""
  value: Any
  source: str
  of_epochs: int | None = None


Recipe = Mapping[str, Setting]   # dotted leaf path ('optim.lr') -> setting


def flag_name(name: str, prefix: str = '') -> str:
  return '--' + (f'{prefix}_{name}' if prefix else name).replace('_', '-')


def violation(value, limits: Limits) -> str | None:
  """What is wrong with ``value`` under ``limits``, or None."""
  if isinstance(value, float) and not math.isfinite(value):
    return 'must be a finite number'
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    for bound, ok, word in ((limits.min, lambda b: value >= b, '>='),
                            (limits.gt, lambda b: value > b, '>'),
                            (limits.max, lambda b: value <= b, '<='),
                            (limits.lt, lambda b: value < b, '<')):
      if bound is not None and not ok(bound):
        return f'must be {word} {bound:g}'
  if limits.choices is not None:
    known = tuple(limits.choices() if callable(limits.choices) else limits.choices)
    if value not in known:
      return f'must be one of {", ".join(map(str, known))}'
  return limits.check(value) if limits.check is not None else None


class ConfigError(ValueError):
  """A setting out of its limits; the message names the field and its flag."""

  def __init__(self, field: str, problem: str, value: Any, prefix: str = '', flag: str | None = None):
    self.field, self.problem, self.value, self.flag = field, problem, value, flag
    super().__init__(f'{field} ({flag or flag_name(field, prefix)}) {problem}, got {value!r}')


class Param(NamedTuple):
  default: Any
  kind: type
  limits: Limits


def _kind(hint) -> type:
  args = [t for t in typing.get_args(hint) if t is not type(None)]
  return args[0] if args else hint


def signature_options(fn: Callable) -> dict[str, Param]:
  """The keyword-only parameters of ``fn`` (after ``*``) with their defaults, types and
  :class:`Limits` (``Annotated[int, Limits(...)] = 10``)."""
  hints = typing.get_type_hints(fn, include_extras=True)
  out = {}
  for name, p in inspect.signature(fn).parameters.items():
    if p.kind is not inspect.Parameter.KEYWORD_ONLY:
      continue
    hint = hints.get(name, type(p.default))
    limits = next((m for m in getattr(hint, '__metadata__', ()) if isinstance(m, Limits)), Limits())
    base = typing.get_args(hint)[0] if hasattr(hint, '__metadata__') else hint
    out[name] = Param(p.default, _kind(base), limits)
  return out


def option_flag(entry: str, option_name: str) -> str:
  return f'--{entry}-{option_name}'.replace('_', '-')


def bind_options(registry: Mapping[str, Any], name: str, given: Mapping[str, Any],
                 what: str = 'entry') -> dict[str, Any]:
  """Every option of entry ``name`` of ``registry`` (a ``what``: method, relaxation): the
  ``given`` ones, checked against their limits, and the defaults of the rest. An
  unknown name or option is an error naming the known ones."""
  if name not in registry:
    raise ValueError(f'unknown {what} {name!r}; known {what}s: {", ".join(registry)}')
  params = registry[name].options
  unknown = sorted(set(given) - set(params))
  if unknown:
    raise ValueError(f'{name} has no option {", ".join(unknown)}; its options: '
                     f'{", ".join(params) or "none"}')
  out = {}
  for key, param in params.items():
    value = given.get(key, param.default)
    problem = value is not None and violation(value, param.limits)
    if problem:
      raise ConfigError(key, problem, value, flag=option_flag(name, key))
    out[key] = value
  return out
