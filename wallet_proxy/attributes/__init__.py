"""SessionM loyalty data in Braze profiles, as custom attributes a marketer can segment on.

Layout: `values` (the attributes of a wallet, their types, what changed), `written` (what
was last written to each profile, so only changes are sent: Redis, else a SQLite file in
the data folder), `track` (the client of Braze's `/users/track`). The bulk command is
bulk/sync.py; the triggers carry the same attributes with `enrich: ["attributes"]`
(triggers/deliverer.py); the support pages show what was last written (support/).
docs/braze.md tells the story.
"""
