"""The package's version, in a leaf module: code that needs it (the User-Agent sent to
SessionM) depends on nothing above it, not on the package root that builds the app."""

__version__ = "0.1.0"
