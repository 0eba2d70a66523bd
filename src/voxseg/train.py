"""``torchrun -m voxseg.train DATASET ...``: the ``voxseg train`` command under torchrun."""

import sys

from voxseg.cli import app

#: the CLI's options that go before the verb, accepted among the train options here
GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")

if __name__ == "__main__":
    args = sys.argv[1:]
    flags = [a for a in args if a in GLOBAL_FLAGS]
    app([*flags, "train", *(a for a in args if a not in GLOBAL_FLAGS)])
