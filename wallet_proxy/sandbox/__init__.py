"""SessionM stand-in: a real HTTP server speaking Connect offers and Core customer tags, and
Braze's two trigger endpoints and `/users/track` (`braze`, with knobs of its own under
`/_sandbox/braze/`).

Tests run it in a thread (`SandboxServer`), people run it with `wallet-proxy sandbox`
(`serve`). Answers depend only on the clock and the seeded users; knobs are the one way to
make it misbehave (latency, injected errors, forced statuses, hangs, trickled headers or
bodies, garbage, huge or absurdly nested bodies, wallets of any size, hostile offers). Knobs
are set in Python or over HTTP, so a benchmark can drive a sandbox running in another process.

Knob precedence for each Connect/Core call: `rate_limit` (SessionM's own limit: past that
many calls in a sliding second, 429 at once), then `latency` (plus up to `latency_spread`),
then `hang`, then `trickle_headers` (a status line, then one header byte at a time,
forever), then the answer is the first of `status`, `error_rate`, `garbage`, `deep` and the
real one; `huge` pads any JSON answer and `trickle` slows whatever is sent. Every 429
carries `retry_after`. For Connect, `generated_offers` sets the size of every `user-*`
wallet and `extra_offers` are raw offers put first in every wallet. Stats include the
busiest sliding second (`busiest_second`) and the 429s `rate_limit` gave (`rate_limited`).

The `/_sandbox/*` admin endpoints (config, stats, reset) need no auth on purpose: this is a
local test double with demo credentials and must never face a real network.

Layout: `server` (the socket, the Flask app, `/_sandbox/*`), `state` (knobs acting on every
call, counters, the `Api` protocol), `knobs` (their rules), `connect` and `core` (one API
each), `braze` (Braze's trigger sends and `/users/track`) with `profiles` (what
`/users/track` keeps), `logos` (the offers' images, `/_sandbox/logos/<name>.png`),
`customers` (the seeded demo data), `wire` (SessionM's formats). Another API is one more
module implementing `state.Api`, listed in `server.build_sandbox`.
"""

from .braze import DEMO_BRAZE_API_KEY
from .connect import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from .core import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from .customers import SEEDED_USERS
from .server import SandboxServer, serve

__all__ = [
    "DEMO_BRAZE_API_KEY",
    "DEMO_CONNECT_AUTH",
    "DEMO_CORE_API_KEY",
    "DEMO_CORE_API_SECRET",
    "DEMO_RETAILER_ID",
    "SEEDED_USERS",
    "SandboxServer",
    "serve",
]
