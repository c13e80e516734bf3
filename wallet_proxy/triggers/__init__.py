"""SessionM-triggered Braze messages: accept a trigger, store it durably, deliver it once.

Layout: `schema` (the body SessionM posts), `properties` (its mapping to the flat
properties Liquid reads), `model` (a trigger and its outbox record), `outbox` (the
store's protocol and the one table of state moves) with `sqlite_outbox` and
`redis_outbox`, `intake` (accepting), `views` (the endpoint), `braze` (the client for
Braze's trigger endpoints), `deliverer` (batching, retries, rate limits), `wallets` (the
optional wallet summary), `setup` (building it for the services container), `running`
(one deliverer per instance), `commands` (the CLI). docs/triggers.md tells the story.
"""
