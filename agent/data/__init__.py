"""Data files shipped with the library (see the LICENSE-* file beside each one)."""
