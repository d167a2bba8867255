"""Development tools of the tunelab repository (not part of the installed package)."""
