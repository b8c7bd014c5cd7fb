"""``python -m ttsopt.cli``: the ``ttsopt`` command."""

from . import main

main()
