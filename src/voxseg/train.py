"""``torchrun -m voxseg.train DATASET ...``: the ``voxseg train`` command under torchrun."""

import sys

from voxseg.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]])
