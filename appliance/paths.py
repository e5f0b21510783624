"""Where the appliance's own folders are: a source checkout's, else the installed ones."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
INSTALLED_MODELS = Path("/var/lib/meeting-appliance/models")
# An admin's own email templates, each replacing the built-in one of its name.
TEMPLATES_OVERRIDE = Path("/etc/meeting-appliance/templates")


def _in_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").is_file()


def models_dir(configured: str = "") -> Path:
    """`[transcriber] models_dir` if set; else ./models in a checkout, the system folder once
    installed."""
    if configured:
        return Path(configured)
    if _in_checkout() and (CHECKOUT / "models").is_dir():
        return CHECKOUT / "models"
    return INSTALLED_MODELS


def builtin_templates() -> Path:
    """templates/ of a source checkout, else the copy pip installed under the prefix."""
    checkout = CHECKOUT / "templates"
    if _in_checkout() and checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share/meeting-appliance/templates"
