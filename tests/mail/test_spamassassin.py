"""SpamAssassin (Debian's package, local rules only,
no network) scores every mail type 0.0 on rules we control.

Rules about how the test delivers (no Received header, no relay) are not the product's;
everything else must stay silent. Skipped only when spamassassin is not installed
(`.ci/run` installs it).
"""

from __future__ import annotations

import shutil

import pytest

from newsletter.sink.mail_checks import SA_ENVIRONMENT_RULES, spamassassin_score
from tests.mail.helpers import MAIL_TYPES

pytestmark = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="spamassassin is not installed (apt-get install spamassassin; .ci/run does)",
)


@pytest.mark.parametrize("kind", MAIL_TYPES)
def test_spamassassin_scores_zero_on_rules_the_product_controls(mails: dict[str, bytes], kind: str) -> None:
    """Regression: every digest scored 0.7 for HTML_FONT_LOW_CONTRAST (the hidden preheader's colour)."""
    scored = spamassassin_score(mails[kind])
    assert scored is not None, "spamassassin did not answer"
    total, rules = scored
    ours = {rule: points for rule, points in rules if rule not in SA_ENVIRONMENT_RULES}
    print(f"spamassassin {kind}: total {total:.1f}; rules {dict(rules)}")
    assert all(points <= 0 for points in ours.values()), f"{kind}: {ours}"
    assert "HTML_FONT_LOW_CONTRAST" not in dict(rules)
