"""Reports of training runs: one run, or several algorithms with several seeds each, as a self-contained HTML
page with PNG plots.

The writers are exported lazily: importing this package must not import matplotlib (slow), which only the page
builders pull in, on first use of ``write_run_report`` or ``write_compare_report``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compare_page import write_compare_report
    from .run_page import write_run_report

__all__ = ["write_run_report", "write_compare_report"]

_WHERE = {"write_run_report": ".run_page", "write_compare_report": ".compare_page"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
