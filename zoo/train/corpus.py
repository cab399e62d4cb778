"""The embedded default corpus: the running Python's own standard-library sources.

Real text that is present on every machine with Python, so the default run needs no
download. Files are read in sorted order, so the corpus is the same on every host.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_files() -> list[Path]:
    """The standard library's .py files, excluding installed third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def stdlib_documents() -> list[str]:
    """One document per standard-library source file."""
    documents = [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_files()]
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise RuntimeError(f"found no Python sources under {sysconfig.get_paths()['stdlib']}")
    return documents
