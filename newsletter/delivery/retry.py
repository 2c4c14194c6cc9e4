"""The retry policy: when whatever was not delivered is tried again, for every sender.

One policy, read from the configuration in one place (``RetryPolicy.from_settings``):

- a message refused for now (a 4xx reply: greylisting, a full mailbox, a rate limit) is not
  retried in the run: its row goes back to the queue, deferred, with its own next attempt
  ``delivery.backoff`` after now (the step chosen by the row's attempts, the last step
  repeating), and the connection goes on with the next row at once. A row that would wait past
  ``delivery.max_age`` fails instead (see ``gives_up``). Greylisting asks for minutes, so
  seconds of waiting in the run only held a connection;
- a connection the server refused, closed (421) or let time out pauses
  ``delivery.retry_delay``, doubling, at most ``delivery.retry_delay_max`` (``pause``): the
  connection parks while another takes its row, or, when no other connection is live (the server
  is away), tries the row again after the pause, ``smtp.retries`` times, before deferring it;
- the web app's confirmation and manage mails that the relay did not take are tried again
  ``web.mail_backoff`` after each attempt, then dropped (``mail_retry_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from newsletter.config import Settings, seconds_list

PAUSE_FLOOR = 0.05  # seconds: a parked connection never spins, even with delivery.retry_delay 0


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again; built by ``from_settings``, shared by the sender and the web mailer."""

    backoff: tuple[int, ...] = (300, 900, 3600, 14400)  # delivery.backoff
    max_age: timedelta = timedelta(days=3)  # delivery.max_age
    pause_first: float = 1.0  # delivery.retry_delay
    pause_max: float = 30.0  # delivery.retry_delay_max
    reconnects: int = 3  # smtp.retries
    mail_backoff: tuple[int, ...] = (10, 60, 300, 900, 3600)  # web.mail_backoff

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the configuration describes; ConfigError for a malformed schedule."""
        delivery = settings.delivery
        return cls(
            backoff=seconds_list("delivery.backoff", delivery.backoff),
            max_age=timedelta(seconds=delivery.max_age),
            pause_first=delivery.retry_delay,
            pause_max=delivery.retry_delay_max,
            reconnects=settings.smtp.retries,
            mail_backoff=seconds_list("web.mail_backoff", settings.web.mail_backoff),
        )

    def next_attempt(self, attempts: int, now: datetime) -> datetime:
        """When a row refused for now on its ``attempts``-th attempt (1 for the first) is tried again."""
        step = self.backoff[min(max(attempts, 1) - 1, len(self.backoff) - 1)]
        return now + timedelta(seconds=step)

    def give_up_after(self, created_at: datetime) -> datetime:
        """The time after which a refused row of an edition created at ``created_at`` fails."""
        return created_at + self.max_age

    @staticmethod
    def gives_up(next_attempt: datetime, give_up_after: datetime | None) -> bool:
        """True when the next attempt would come after the edition's give-up time."""
        return give_up_after is not None and next_attempt > give_up_after

    def pause(self, times: int) -> float:
        """Seconds a connection waits after its ``times``-th refusal in a row (0 for the first)."""
        return min(max(self.pause_first, PAUSE_FLOOR) * 2 ** min(times, 32), max(self.pause_max, PAUSE_FLOOR))

    def mail_retry_at(self, attempts: int, now: datetime) -> datetime | None:
        """When a web mail the relay did not take on its ``attempts``-th try (1 for the first) is
        tried again; None: it has had every retry and is dropped."""
        if attempts > len(self.mail_backoff):
            return None
        return now + timedelta(seconds=self.mail_backoff[attempts - 1])
