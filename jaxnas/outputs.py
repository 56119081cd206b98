"""The files a run leaves for a person to read, written one way by every command."""
from __future__ import annotations

import json
import os
from typing import Any


def write_genotype(workdir: str, genotype: Any, benchmark: dict[str, float] | None = None) -> None:
  """``genotype.json`` (the genotype's JSON, with its row of ``--benchmark-table`` as
  ``benchmark`` when given) and ``genotype.txt`` (its text) in ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  doc = genotype.to_json() | ({'benchmark': benchmark} if benchmark is not None else {})
  with open(os.path.join(workdir, 'genotype.json'), 'w') as f:
    json.dump(doc, f, indent=1)
  with open(os.path.join(workdir, 'genotype.txt'), 'w') as f:
    f.write(str(genotype) + '\n')
