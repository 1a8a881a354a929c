"""``python -m kvdist.bench`` is ``kvdist-bench``."""

from kvdist.bench.cli import main

raise SystemExit(main())
