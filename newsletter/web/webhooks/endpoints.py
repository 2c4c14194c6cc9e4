"""Provider webhooks: bounce and complaint notifications from Amazon SES (via SNS), Postmark,
Mailgun and SendGrid, judged by the same table as SMTP replies and DSNs.

One module per provider (``ses``, ``postmark``, ``mailgun``, ``sendgrid``) behind the
``Provider`` Protocol; this module routes and acts. Two locks on every event:

1. **The provider's own proof**, checked first by the provider's module: SNS message
   signatures, Postmark's HTTP basic-auth secret, Mailgun's HMAC of timestamp and token,
   SendGrid's ECDSA signature of timestamp and body. An endpoint whose secret is not
   configured answers 404.
2. **Our own proof**, as for mailed reports (``BounceProcessor.authenticate``): an event
   acts only when it carries a VERP token that verifies (SES reports the envelope sender) or
   our Message-ID of the outbox row *of the address it names*. Anything else changes nobody.

A bounce is judged from its status, SMTP code and diagnostic; a complaint unsubscribes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.delivery.bounces import VERP_RE, BounceProcessor
from newsletter.service import Service
from newsletter.web.webhooks.base import EVENT_MEMORY, Event, Provider
from newsletter.web.webhooks.mailgun import Mailgun
from newsletter.web.webhooks.postmark import Postmark
from newsletter.web.webhooks.sendgrid import Sendgrid
from newsletter.web.webhooks.ses import CertFetcher, Ses

log = logging.getLogger("newsletter.web.webhooks")

MESSAGE_ID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


@dataclass(frozen=True)
class Outcome:
    address: str
    action: str  # suppressed | soft | blocked | sender | unsubscribed | unmatched | repeat | ignored


class Webhooks:
    """The endpoints; ``fetch_cert`` gets an SNS signing certificate (tests hand in their own)."""

    def __init__(self, service: Service, *, fetch_cert: CertFetcher | None = None) -> None:
        settings = service.settings.webhooks
        self.providers: list[Provider] = [
            Ses(settings, fetch_cert=fetch_cert),
            Postmark(settings),
            Mailgun(settings),
            Sendgrid(settings),
        ]
        store = service.store
        self.bounces = store.bounces
        self.processor = BounceProcessor(
            store.outbox, store.subscribers, service.signer, service.runner.suppressor()
        )

    def routes(self) -> list[Route]:
        return [Route(f"/webhooks/{p.name}", self._endpoint(p), methods=["POST"]) for p in self.providers]

    def _endpoint(self, provider: Provider) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not provider.enabled():
                return Response(status_code=404)
            notice = await provider.receive(request)
            if isinstance(notice, Response):
                return notice
            outcomes = await run_in_threadpool(self.apply, notice.events, provider.name)
            return JSONResponse({"results": [{"address": o.address, "action": o.action} for o in outcomes]})

        return endpoint

    # -- acting ----------------------------------------------------------------------

    def apply(self, events: Iterable[Event], source: str) -> list[Outcome]:
        outcomes = []
        for event in events:
            outcomes.append(Outcome(event.address, self._apply_one(event, source)))
        for o in outcomes:
            log.info("%s webhook: %s %s", source, o.address, o.action)
        return outcomes

    def _apply_one(self, event: Event, source: str) -> str:
        """What one event did; an event whose ids were seen before is a ``repeat`` and does nothing."""
        if event.kind not in ("bounce", "complaint") or not event.address:
            return "ignored"
        if self.bounces.already_judged(event.keys):
            return "repeat"
        action = self._act(event, source)
        if action not in ("ignored", "unmatched"):
            now = self.bounces.clock()
            self.bounces.mark_judged(event.keys, expires_at=now + timedelta(seconds=EVENT_MEMORY), now=now)
        return action

    def _act(self, event: Event, source: str) -> str:
        verps = [s for s in event.proofs if VERP_RE.search(s)]
        message_ids = [m for s in event.proofs for m in MESSAGE_ID_RE.findall(s)]
        row = self.processor.authenticate(None, verps, [event.address.lower()])
        for message_id in message_ids:
            if row is not None:
                break
            row = self.processor.authenticate(
                None, [], [event.address.lower()], message_id=message_id, provider_signed=True
            )
        if row is None:
            return "unmatched"
        suppressor = self.processor.suppressor
        if event.kind == "complaint":
            counted = suppressor.complaint(
                subscriber_id=row.subscriber_id,
                delivery_id=row.id,
                reason=f"complaint reported by {source}",
                source=source[:20],
            )
            return "unsubscribed" if counted else "repeat"
        if not event.permanent and not event.status.startswith("5"):
            return "ignored"  # the provider still retries: like a delayed DSN
        judgement = suppressor.record(
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
            code=event.code,
            reply=f"{event.status} {event.diagnostic}".strip(),
            source=source[:20],
            stage="dsn",
            status=event.status,
        )
        if judgement is None:
            return "repeat"
        return {"bad_address": "suppressed"}.get(judgement.verdict.value, judgement.verdict.value)


def webhook_routes(service: Service, *, fetch_cert: CertFetcher | None = None) -> list[Route]:
    """The webhook routes for ``create_app``."""
    return Webhooks(service, fetch_cert=fetch_cert).routes()
