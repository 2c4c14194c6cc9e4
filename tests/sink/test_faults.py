"""Fault injection, seen from a real smtplib client."""

from __future__ import annotations

import smtplib
import time

import pytest
from sink_samples import build, wire

from newsletter.sink.errors import FaultSpecError
from newsletter.sink.faults import FaultRule, parse_fault_spec
from newsletter.sink.server import SinkServer

RAW = wire(build())


def client(sink: SinkServer) -> smtplib.SMTP:
    return smtplib.SMTP(sink.host, sink.smtp_port, timeout=10)


def outcome(sink: SinkServer, to: str = "reader@example.org") -> str:
    """Send one message on a fresh connection; describe what the client saw."""
    try:
        with client(sink) as c:
            c.sendmail("news@news.example.com", [to], RAW)
        return "ok"
    except smtplib.SMTPServerDisconnected:
        return "disconnected"
    except smtplib.SMTPRecipientsRefused as exc:
        return str(next(iter(exc.recipients.values()))[0])
    except smtplib.SMTPResponseException as exc:
        return str(exc.smtp_code)


def test_rcpt_550_for_matching_recipients_only(sink: SinkServer) -> None:
    sink.faults.add(parse_fault_spec("rcpt:550 5.1.1 No such user:to=*@bad.example"))
    with client(sink) as c:
        refused = c.sendmail("news@news.example.com", ["ok@good.example", "gone@bad.example"], RAW)
    assert refused == {"gone@bad.example": (550, b"5.1.1 No such user")}
    [message] = sink.wait_for()
    assert message.rcpt_tos == ("ok@good.example",)


def test_regex_recipient_pattern(sink: SinkServer) -> None:
    sink.faults.add(FaultRule(stage="rcpt", code=450, to=r"re:^temp\d+@"))
    assert outcome(sink, "temp7@example.org") == "450"
    assert outcome(sink, "someone@example.org") == "ok"


def test_mail_421_replies_then_closes(sink: SinkServer) -> None:
    sink.faults.add(FaultRule(stage="mail", code=421, text="4.7.0 Try again later"))
    with client(sink) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.sendmail("news@news.example.com", ["reader@example.org"], RAW)
        assert refused.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
    assert sink.messages() == []


@pytest.mark.parametrize("code", [451, 452, 552, 554])
def test_data_reply_codes_do_not_store(sink: SinkServer, code: int) -> None:
    sink.faults.add(FaultRule(stage="data", code=code))
    assert outcome(sink) == str(code)
    assert sink.messages() == []


def test_every_nth_and_after_and_times(sink: SinkServer) -> None:
    rule = sink.faults.add(parse_fault_spec("data:451:every=2"))
    assert [outcome(sink) for _ in range(4)] == ["ok", "451", "ok", "451"]
    assert sink.faults.fired(rule) == 2
    sink.faults.clear()
    sink.faults.add(parse_fault_spec("data:451:after=1:times=2"))
    assert [outcome(sink) for _ in range(5)] == ["ok", "451", "451", "ok", "ok"]
    assert len(sink.messages()) == 5


def test_seeded_probability_repeats_exactly(sink: SinkServer) -> None:
    def run() -> list[str]:
        sink.faults.clear()
        sink.faults.add(parse_fault_spec("data:451:probability=0.5:seed=7"))
        return [outcome(sink) for _ in range(12)]

    first, second = run(), run()
    assert first == second
    assert "ok" in first and "451" in first


def test_drop_before_data_reply_does_not_store(sink: SinkServer) -> None:
    sink.faults.add(parse_fault_spec("data:drop"))
    assert outcome(sink) == "disconnected"
    assert sink.messages() == []


def test_drop_after_store_keeps_the_message(sink: SinkServer) -> None:
    sink.faults.add(parse_fault_spec("data:drop-after-store"))
    assert outcome(sink) == "disconnected"
    [message] = sink.wait_for()
    assert message.raw == RAW


def test_drop_at_rcpt(sink: SinkServer) -> None:
    sink.faults.add(parse_fault_spec("rcpt:drop:to=*@flaky.example"))
    assert outcome(sink, "x@flaky.example") == "disconnected"
    assert outcome(sink, "x@fine.example") == "ok"


def test_delay_slows_the_reply(sink: SinkServer) -> None:
    sink.faults.add(parse_fault_spec("mail:delay=0.3"))
    started = time.monotonic()
    assert outcome(sink) == "ok"
    assert time.monotonic() - started >= 0.3


def test_close_after_n_messages_per_connection(sink: SinkServer) -> None:
    sink.faults.close_after = 2
    with client(sink) as c:
        c.sendmail("a@example.com", ["b@example.org"], RAW)
        c.sendmail("a@example.com", ["b@example.org"], RAW)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.sendmail("a@example.com", ["b@example.org"], RAW)
    assert outcome(sink) == "ok"  # a new connection is fine
    assert len(sink.messages()) == 3


def test_clear_removes_faults(sink: SinkServer) -> None:
    sink.faults.add(FaultRule(stage="mail", code=451))
    assert outcome(sink) == "451"
    sink.faults.clear()
    assert outcome(sink) == "ok"


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "rcpt:550 5.1.1 No such user:to=*@bad.example",
            FaultRule(stage="rcpt", code=550, text="5.1.1 No such user", to="*@bad.example"),
        ),
        ("data:451:probability=0.1:seed=7", FaultRule(stage="data", code=451, probability=0.1, seed=7)),
        (
            "data:drop-after-store:after=10:times=1",
            FaultRule(stage="data", action="drop_after_store", after=10, times=1),
        ),
        ("mail:delay=2", FaultRule(stage="mail", action="delay", delay=2.0)),
        (
            "rcpt:450:from=*@list.example:every=3",
            FaultRule(stage="rcpt", code=450, sender="*@list.example", every=3),
        ),
        ("rcpt:550:to=re:^x\\d+@:every=2", FaultRule(stage="rcpt", code=550, to=r"re:^x\d+@", every=2)),
    ],
)
def test_parse_fault_spec(spec: str, expected: FaultRule) -> None:
    assert parse_fault_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("data", "STAGE:ACTION"),
        ("helo:550", "unknown stage"),
        ("data:250", "400-599"),
        ("data:bounce", "reply code"),
        ("data:451:sometimes", "KEY=VALUE"),
        ("data:451:every=x", "needs a number"),
        ("mail:550:to=*@x", "mail stage"),
        ("rcpt:drop-after-store", "data stage"),
        ("data:451:probability=2", "between 0 and 1"),
        ("rcpt:550:to=re:(", "regular expression"),
    ],
)
def test_bad_fault_specs_explain_themselves(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message.replace("(", r"\(")) as error:
        parse_fault_spec(spec)
    assert "\n" not in str(error.value)


def test_rule_json_round_trip() -> None:
    rule = parse_fault_spec("rcpt:550 5.1.1 No such user:to=*@bad.example:times=2")
    assert FaultRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(FaultSpecError, match="unknown fault field"):
        FaultRule.from_dict({"stage": "data", "code": 451, "colour": "red"})
