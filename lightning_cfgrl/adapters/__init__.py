"""Adapters that put third-party token models behind the ``TokenGenerator`` protocol.

Importing this package imports no third-party model library; each adapter imports its own on use.
"""

from lightning_cfgrl.adapters.musicgen import MusicgenCache, MusicgenGenerator

__all__ = ["MusicgenCache", "MusicgenGenerator"]
