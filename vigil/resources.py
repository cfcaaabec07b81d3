"""Where the study's data files are: sql/, schemas/, codelists/ and reports/.

In a checkout (and an editable install) they are the checkout's top-level folders; an installed
wheel carries them as package data under vigil/_study/ (pyproject.toml, force-include).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent
_BUNDLED = PACKAGE_DIR / "_study"
DATA_ROOT = _BUNDLED if (_BUNDLED / "sql").is_dir() else CHECKOUT

SQL_DIR = DATA_ROOT / "sql"
SCHEMA_DIR = DATA_ROOT / "schemas"
CODELIST_DIR = DATA_ROOT / "codelists"
TEMPLATE_DIR = DATA_ROOT / "reports"


def in_checkout() -> bool:
    """True when running from a git checkout (code_version can then use git describe)."""
    return DATA_ROOT == CHECKOUT and (CHECKOUT / ".git").exists()
