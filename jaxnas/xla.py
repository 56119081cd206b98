"""XLA settings jaxnas applies on import (CPU only; see shared/XLA-CPU-NOTES.md).

XLA's newer CPU fusion emitters compile the many small kernels of a supernet
2-3x more slowly than the classic ones, for no faster steps (one DARTS mixed
op forward+backward: 8.1 s -> 2.8 s compile). A user who sets the flag
themselves in ``XLA_FLAGS`` keeps their value.
"""
import os

CPU_FLAGS = ('--xla_cpu_use_fusion_emitters=false',)

# For a program that runs once (FreeDARTS' saliency): LLVM's optimisation passes
# cost more than they save. DARTS supernet, SynFlow saliency on 8x8 digits: cold
# start 25.7 s -> 16.8 s, the run itself 0.016 s -> 0.053 s.
RUN_ONCE_OPTIONS = {'xla_backend_optimization_level': 0}


def configure() -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f for f in CPU_FLAGS if f.split('=')[0] not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *extra]).strip()


def enable_compilation_cache(path: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache so that a second run starts in seconds."""
  import jax
  path = path or os.environ.get('JAXNAS_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'jaxnas', 'xla')
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path
