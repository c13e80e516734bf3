"""The seeded customers (demo data): who exists, their points, and their offers in two languages.

Every answer is built from the clock at request time, so an offer seeded as expired always is.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .logos import logo_url
from .wire import dotnet

GROUP_ID = "6a0f0c1e-0000-4000-8000-000000000001"
CATEGORY_ID = "6a0f0c1e-0000-4000-8000-000000000002"
_CAROL_OFFERS = 2500

Offer = dict[str, Any]


def _alice_offers(now: datetime, es: bool) -> list[Offer]:
    """One offer per case a wallet view must get right, deliberately not in expiry order."""

    def t(english: str, spanish: str) -> str:
        return spanish if es else english

    logo = {"uri": logo_url("coffee-logo"), "category_name": "Logo"}
    hero = {"uri": logo_url("coffee-hero"), "category_name": "Hero"}
    return [
        {
            "id": "a11ce000-0000-4000-8000-000000000003",
            "offer_id": "a11ce000-0000-4000-9000-000000000003",
            "offer_group_id": GROUP_ID,
            "offer_type": "points_multiplier",
            "title": t("Double points on Saturdays", "Puntos dobles los sábados"),
            "description": t(
                "Earn twice the points on every Saturday purchase.",
                "Gana el doble de puntos en cada compra del sábado.",
            ),
            "terms": t(
                "Saturdays only. Points post within 48 hours.",
                "Solo sábados. Los puntos se abonan en 48 horas.",
            ),
            "pos_discount_id": "SAT-2X",
            "points": 0,
            "is_redeemable": True,
            "start_date": dotnet(now - timedelta(days=5), 0),
            "redemption_end_date": dotnet(now + timedelta(days=30), 0),
            "custom_data": {"tier": "gold"},
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000001",
            "offer_id": "a11ce000-0000-4000-9000-000000000001",
            "offer_group_id": GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("Free pastry with any drink", "Bollería gratis con cualquier bebida"),
            "description": t(
                "Pick any pastry from the counter when you buy a drink.",
                "Elige cualquier bollo del mostrador al comprar una bebida.",
            ),
            "terms": t(
                "One per visit. Not valid with other offers.",
                "Uno por visita. No acumulable con otras ofertas.",
            ),
            "pos_discount_id": "PASTRY-FREE",
            "points": 0,
            "is_redeemable": True,
            "start_date": dotnet(now - timedelta(days=32), 3),
            "expiration_date": dotnet(now - timedelta(days=2), 3),
            "media": [logo, hero],
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000004",
            "offer_id": "a11ce000-0000-4000-9000-000000000004",
            "root_offer_id": "a11ce000-0000-4000-9000-000000000004",
            "offer_group_id": GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("Free refill, always", "Recarga gratis, siempre"),
            "description": t(
                "Bring your cup back for a free refill of filter coffee.",
                "Vuelve con tu taza y te la rellenamos gratis con café de filtro.",
            ),
            "terms": t("Same day, same store.", "Mismo día, misma tienda."),
            "pos_discount_id": "REFILL",
            "points": 0,
            "is_redeemable": True,
            "start_date": dotnet(now - timedelta(days=400), 7),
            "expiration_date": None,
            "media": [hero],
            "is_featured": True,
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000002",
            "offer_id": "a11ce000-0000-4000-9000-000000000002",
            "offer_group_id": GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("10% off your next coffee", "10 % de descuento en tu próximo café"),
            "description": t(
                "Show this offer at the till to save on any coffee.",
                "Muestra esta oferta en caja para ahorrar en cualquier café.",
            ),
            "terms": t(
                "Valid in participating stores. One use.",
                "Válido en tiendas participantes. Un solo uso.",
            ),
            "pos_discount_id": "COFFEE-10",
            "points": 100,
            "is_redeemable": True,
            "start_date": dotnet(now - timedelta(days=1), 3),
            "expiration_date": dotnet(now + timedelta(days=3), 7),
            "media": [logo],
            "reward_type": "percent_off",
        },
        {
            "id": "a11ce000-0000-4000-8000-000000000005",
            "offer_id": "a11ce000-0000-4000-9000-000000000005",
            "offer_group_id": GROUP_ID,
            "offer_type": "points_redemption",
            "title": t("$5 off a bag of beans", "5 € de descuento en una bolsa de café"),
            "description": t(
                "Trade 500 points for $5 off any bag of whole beans.",
                "Cambia 500 puntos por 5 € de descuento en cualquier bolsa de café en grano.",
            ),
            "terms": t("Needs 500 available points.", "Necesitas 500 puntos disponibles."),
            "pos_discount_id": "BEANS-5",
            "points": 500,
            "is_redeemable": False,
            "start_date": dotnet(now - timedelta(days=3), 0),
            "expiration_date": dotnet(now + timedelta(days=10), 7),
        },
    ]


def _mallory_offers(now: datetime, _es: bool) -> list[Offer]:
    """Hostile texts (the same in every culture) to prove the proxy escapes what it renders."""
    return [
        {
            "user_offer_id": "0bad0000-0000-4000-8000-000000000001",
            "offer_id": "0bad0000-0000-4000-9000-000000000001",
            "offer_group_id": GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": "<script>alert(1)</script>",
            "description": "<b>html</b> & \"quotes\" & 'apostrophes'",
            "terms": "Void where <em>prohibited</em>.",
            "pos_discount_id": "<img src=x onerror=alert(2)>",
            "points": 0,
            "is_redeemable": True,
            "start_date": dotnet(now - timedelta(days=1), 3),
            "expiration_date": dotnet(now + timedelta(days=7), 3),
            "media": [
                {"uri": "https://example.com/mallory-logo.png?a=1&b=2", "category_name": "Logo"}
            ],
        }
    ]


def _carol_offer(n: int, now: datetime, es: bool) -> Offer:
    """Offer number `n` (from 1) of a large wallet; distinct future expiries in no order."""
    return {
        "user_offer_id": f"c0000000-0000-4000-8000-{n:012d}",
        "offer_id": f"c0000000-0000-4000-9000-{n:012d}",
        "offer_group_id": GROUP_ID,
        "offer_type": "manual_fulfillment",
        "name": f"Oferta {n}" if es else f"Offer {n}",
        "description": f"Oferta generada número {n}." if es else f"Generated offer number {n}.",
        "terms": "Una por cliente." if es else "One per customer.",
        "pos_discount_id": f"GEN-{n:04d}",
        "points": n % 50 * 10,
        "is_redeemable": True,
        "start_date": dotnet(now - timedelta(days=1), (0, 3, 7)[n % 3]),
        "expiration_date": dotnet(
            now + timedelta(days=1 + n * 37 % 365, minutes=n), (7, 0, 3)[n % 3]
        ),
    }


OfferPage = Callable[[datetime, bool, int, int], tuple[list[Offer], int]]


def _listed(build: Callable[[datetime, bool], list[Offer]]) -> OfferPage:
    """Page a short wallet that is cheap to build whole."""

    def page(now: datetime, es: bool, skip: int, take: int) -> tuple[list[Offer], int]:
        offers = build(now, es)
        return offers[skip : skip + take], len(offers)

    return page


def _carol_page(now: datetime, es: bool, skip: int, take: int) -> tuple[list[Offer], int]:
    """Build only the asked page: building all 2,500 offers per call would skew benchmarks."""
    stop = min(skip + take, _CAROL_OFFERS)
    return [_carol_offer(n, now, es) for n in range(skip + 1, stop + 1)], _CAROL_OFFERS


@dataclass(frozen=True)
class Wallet:
    """A customer's Connect wallet; `offers` builds one page for a time and a language."""

    description: str
    opted_in: bool
    activated: bool
    total_points: int
    available_points: int
    offers: OfferPage


_WALLETS = {
    "demo-alice": Wallet(
        "1,250 points; 5 offers: expired, 3 days left, 30 days left, never expires, "
        "not redeemable",
        True,
        True,
        4000,
        1250,
        _listed(_alice_offers),
    ),
    "demo-bob": Wallet("40 points; no offers", True, False, 40, 40, _listed(lambda _now, _es: [])),
    "demo-carol": Wallet(
        "99,999 points; 2,500 live offers (needs 3 pages of 1,000)",
        True,
        True,
        120000,
        99999,
        _carol_page,
    ),
    "demo-mallory": Wallet(
        "0 points; 1 offer with <script> and <b> in its texts (escaping)",
        False,
        False,
        0,
        0,
        _listed(_mallory_offers),
    ),
}
GENERATED_OFFERS = 3  # the default of the `generated_offers` knob
_FILLER = " Terms and conditions apply, see the store for details."


def _generated(count: int, padding: int = 0) -> Wallet:
    """Any `user-*` id has this wallet (3 offers unless the `generated_offers` knob says
    otherwise), so load tests and benchmarks can use as many distinct customers as they like
    (each still a separate SessionM call and cache key). `padding` characters more in each
    offer's description make large wallets of few offers (the `offer_padding` knob)."""
    filler = (_FILLER * (padding // len(_FILLER) + 1))[:padding]

    def offer(n: int, now: datetime, es: bool) -> Offer:
        made = _carol_offer(n, now, es)
        return {**made, "description": made["description"] + filler} if filler else made

    def page(now: datetime, es: bool, skip: int, take: int) -> tuple[list[Offer], int]:
        stop = min(skip + take, count)
        return [offer(n, now, es) for n in range(skip + 1, stop + 1)], count

    return Wallet(
        f"any user-* id: 120 points, {count:,} live offers (for load tests)",
        True,
        True,
        500,
        120,
        page,
    )


SEEDED_USERS = {user_id: wallet.description for user_id, wallet in _WALLETS.items()}
SEEDED_USERS["user-*"] = _generated(GENERATED_OFFERS).description


def customer_exists(user_id: str) -> bool:
    """Seeded users plus open-ended prefixes, so bulk tagging tests can invent customers."""
    return user_id in _WALLETS or user_id.startswith(("user-", "ext-"))


def wallet_for(
    user_id: str, generated_offers: int = GENERATED_OFFERS, offer_padding: int = 0
) -> Wallet | None:
    """The Connect wallet of a seeded or generated (`user-*`) customer."""
    if user_id in _WALLETS:
        return _WALLETS[user_id]
    if user_id.startswith("user-"):
        return _generated(generated_offers, offer_padding)
    return None
