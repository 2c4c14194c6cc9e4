"""Provider webhooks (SES, Postmark, Mailgun, SendGrid): one module per provider behind the
``Provider`` Protocol of ``base``; ``endpoints`` routes and acts."""

from newsletter.web.webhooks.endpoints import Webhooks, webhook_routes

__all__ = ["Webhooks", "webhook_routes"]
