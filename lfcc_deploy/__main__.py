"""`python -m lfcc_deploy` — the same CLI as `lfcc-deploy` (and what torchrun launches)."""
from .cli import run

if __name__ == "__main__":
    run()
