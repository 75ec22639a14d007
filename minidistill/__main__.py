"""``python -m minidistill …`` (and ``torchrun --nproc_per_node N -m minidistill finetune|distill …``)
runs the command line."""

import sys

from .cli import main

sys.exit(main())
