"""The support pages' blueprint, in a module of its own: the wallet pages (support/__init__.py),
the trigger pages (support/triggers.py) and the tags pages (support/tags.py) add routes to it."""

from flask import Blueprint

bp = Blueprint("support", __name__, url_prefix="/support", static_folder="static")
