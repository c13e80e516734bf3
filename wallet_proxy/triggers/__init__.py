"""SessionM-triggered Braze messages: accept a trigger, store it durably, deliver it once.

Layout: `schema` (the body SessionM posts), `properties` (its mapping to the flat
properties Liquid reads), `model` (a trigger and its outbox record), `outbox` (the durable
store: SQLite or Redis), `braze` (the client for Braze's trigger endpoints), `deliverer`
(batching, retries, rate limits), `views` (the endpoint), `commands` (the CLI).
"""
