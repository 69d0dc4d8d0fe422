"""runlytics: a training-run analytics warehouse.

The repository's top-level folders (``api/``, ``cli/``, ``ingest/``, ``migrations/``,
``sampler/``, ``warehouse/``) install as subpackages of this one package
(``runlytics.warehouse`` …), so that no generic top-level name reaches site-packages.
"""

from __future__ import annotations

__version__ = "0.2.0"
