"""``python -m rllib_k15 …`` is the ``k15`` command (:mod:`rllib_k15.commands.k15`)."""

from rllib_k15.commands.k15 import main

raise SystemExit(main())
