import os

# Eight CPU devices for the sharding tests; must be set before JAX starts.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
if 'xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'

import jaxnas  # noqa: E402,F401  (adds jaxnas' XLA flags before the backend starts)
