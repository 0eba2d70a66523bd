"""``python -m voxseg.cli`` (used by torchrun for distributed training)."""

from voxseg.cli import main

main()
