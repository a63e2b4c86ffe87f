"""`python -m admm_explorer ...` is the admm-explorer command; torchrun launches it as `torchrun ... -m admm_explorer run`."""
import sys

from .cli import main

sys.exit(main())
