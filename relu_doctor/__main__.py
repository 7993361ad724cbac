"""python -m relu_doctor: the same as the relu-doctor command."""

from .cli import main

main()
