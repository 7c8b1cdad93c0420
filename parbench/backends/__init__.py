"""Deployment forms, one module each, behind one interface (:mod:`.base`); :mod:`.registry` maps
variant names to forms and builds them with their options; :mod:`.export_support` holds what the
converter-based forms share."""

from parbench.backends.registry import VARIANTS, all_variants, get_backend

__all__ = ["VARIANTS", "all_variants", "get_backend"]
