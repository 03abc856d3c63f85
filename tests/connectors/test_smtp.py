"""Email over SMTP against a real SMTP server on loopback (aiosmtpd): what arrives, what is refused."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import sys

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors import mail
from connectors.smtp import SmtpConnector, SmtpSettings, SmtpSettingsError, load_settings
from engine import outbox, schema
from engine.store import Store
from peers import SmtpPeer, free_port, smtp_server

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
KEY = "play:usage_limit:acme:h1:e1:day1"
SENDER = "Acme Success <cs@acme.test>"
PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()


@pytest.fixture
def server():
    with smtp_server() as running:
        yield running


@pytest.fixture
def tls(tmp_path):
    """A CA of the test's own, a server certificate for 127.0.0.1 from it, and the CA as a PEM file."""
    trustme = pytest.importorskip("trustme") if "trustme" not in sys.modules else sys.modules["trustme"]
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return server_ctx, pem


def connector(store: Store, port: int, **settings) -> SmtpConnector:
    smtp = SmtpSettings(**{"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5.0, **settings})
    return SmtpConnector(store, smtp, mail.MailSettings(from_address=SENDER, message_id_domain="mail.acme.test",
                                                        unsubscribe_mailto="unsubscribe@acme.test"))


def email(key: str = KEY, to: str = "ada@customer.test", subject: str = "Your usage at 85%",
          unsubscribe_url: str | None = "https://acme.test/u/abc") -> cb.EmailMessage:
    return cb.EmailMessage(key=key, account_id="acme", actor="play:usage_limit", play="usage_limit", step="day1",
                           requested_at=AT, to=to, subject=subject, body="Hi Ada,\n\nYou use 85%.\n",
                           template="usage_alert", unsubscribe_url=unsubscribe_url)


def outbox_rows(store: Store) -> list[dict]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.OutboxMessage.__table__)).mappings()]


# ---------------------------------------------------------------- what arrives


async def test_the_message_arrives_with_its_sender_recipient_subject_body_and_a_message_id_from_the_key(store, server):
    peer, port = server
    result = await connector(store, port).act(email())
    [msg] = peer.messages
    assert peer.envelopes == [("cs@acme.test", ["ada@customer.test"])]
    assert msg["From"] == SENDER and msg["To"] == "ada@customer.test" and msg["Subject"] == "Your usage at 85%"
    assert msg.get_content().replace("\r\n", "\n") == "Hi Ada,\n\nYou use 85%.\n"  # CRLF on the wire
    assert msg["Message-ID"] == mail.message_id(KEY, "mail.acme.test") == result.external_id
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@mail.acme.test>")
    assert not result.duplicate


async def test_an_unsubscribe_url_gives_list_unsubscribe_with_one_click_post(store, server):
    peer, port = server
    await connector(store, port).act(email())
    [msg] = peer.messages
    assert msg["List-Unsubscribe"] == "<https://acme.test/u/abc>, <mailto:unsubscribe@acme.test?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_without_an_unsubscribe_url_there_is_no_one_click_header(store, server):
    peer, port = server
    await connector(store, port).act(email(unsubscribe_url=None))
    [msg] = peer.messages
    assert msg["List-Unsubscribe"] == "<mailto:unsubscribe@acme.test?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] is None


async def test_a_non_ascii_subject_arrives_intact(store, server):
    peer, port = server
    await connector(store, port).act(email(subject="Ihre Nutzung: 85 % – größer"))
    assert peer.messages[0]["Subject"] == "Ihre Nutzung: 85 % – größer"


# ---------------------------------------------------------------- the ledger


async def test_a_repeated_key_sends_no_second_message_and_returns_the_first_result(store, server):
    peer, port = server
    smtp = connector(store, port)
    first = await smtp.act(email())
    again = await smtp.act(email())
    assert len(peer.messages) == 1 and peer.commands.count("DATA") == 1
    assert again.duplicate and again.external_id == first.external_id
    [row] = outbox_rows(store)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["sent_at"] is not None
    assert row["provider_message_id"] == first.external_id


async def test_the_sent_row_is_found_by_its_message_id_with_or_without_brackets(store, server):
    _, port = server
    result = await connector(store, port).act(email())
    assert result.external_id is not None
    with store.connect() as conn:
        found = outbox.by_message_id(conn, result.external_id)
        bare = outbox.by_message_id(conn, result.external_id.strip("<>"))
    assert found is not None and found == bare
    assert (found.key, found.account_id, found.play, found.recipient) == (KEY, "acme", "usage_limit",
                                                                          "ada@customer.test")


async def test_a_pending_row_of_the_store_connector_is_sent_once_by_smtp(store, server):
    from connectors.store import StoreConnector

    peer, port = server
    written = await StoreConnector(store).act(email())
    sent = await connector(store, port).act(email())
    assert not sent.duplicate and len(peer.messages) == 1
    [row] = outbox_rows(store)
    assert str(row["id"]) == written.external_id and row["status"] == "sent"


class _AcceptsThenLoses(SmtpPeer):
    """Keeps the first message but answers 451, as if its 250 had been lost on the way back."""

    async def handle_DATA(self, server, session, envelope):
        accepted = await super().handle_DATA(server, session, envelope)
        return "451 4.3.0 try again" if len(self.messages) == 1 else accepted


async def test_a_retry_after_a_lost_answer_resends_with_the_same_message_id(store):
    with smtp_server(_AcceptsThenLoses()) as (peer, port):
        smtp = connector(store, port)
        with pytest.raises(cb.TransientError):
            await smtp.act(email())
        [row] = outbox_rows(store)
        assert row["status"] == "pending" and "451" in row["last_error"]
        await smtp.act(email())
    first, second = peer.messages
    assert first["Message-ID"] == second["Message-ID"] == mail.message_id(KEY, "mail.acme.test")
    assert first.as_bytes() == second.as_bytes()  # Date is the step's time: the very same message
    assert outbox_rows(store)[0]["status"] == "sent" and outbox_rows(store)[0]["attempts"] == 2


# ---------------------------------------------------------------- what the server refuses


async def test_550_at_rcpt_is_a_hard_bounce_and_the_row_fails(store, server):
    peer, port = server
    peer.refuse("gone@customer.test", "550 5.1.1 <gone@customer.test>: no such user")
    with pytest.raises(cb.Bounced) as err:
        await connector(store, port).act(email(to="gone@customer.test"))
    assert err.value.recipient == "gone@customer.test" and err.value.code == 550
    assert not err.value.retryable and "no such user" in str(err.value)
    assert peer.messages == [] and "DATA" not in peer.commands
    [row] = outbox_rows(store)
    assert row["status"] == "failed" and "550" in row["last_error"]


@pytest.mark.parametrize("reply", ["554 5.7.1 <ada@customer.test>: Relay access denied",
                                   "550 5.7.1 Service unavailable; client host blocked using a blocklist"])
async def test_a_5_7_policy_refusal_at_rcpt_is_permanent_but_not_a_bounce(store, server, reply):
    peer, port = server
    peer.refuse("ada@customer.test", reply)
    with pytest.raises(cb.PermanentError) as err:
        await connector(store, port).act(email())
    assert not isinstance(err.value, cb.Bounced)
    assert "by policy" in str(err.value) and "PLAYBOOK_SMTP_HOST" in str(err.value)
    assert outbox_rows(store)[0]["status"] == "failed"


@pytest.mark.parametrize(("command", "reply"), [("RCPT", "451 4.7.1 greylisted, try again later"),
                                                 ("MAIL", "421 4.3.2 shutting down"),
                                                 ("DATA", "452 4.2.2 mailbox full")])
async def test_a_4xx_is_transient_and_the_row_stays_unsent(store, server, command, reply):
    peer, port = server
    peer.script(command, reply)
    with pytest.raises(cb.TransientError) as err:
        await connector(store, port).act(email())
    assert reply.split()[0] in str(err.value) and peer.messages == []
    [row] = outbox_rows(store)
    assert row["status"] == "pending" and row["sent_at"] is None


@pytest.mark.parametrize(("command", "reply"), [("MAIL", "550 5.7.1 sender not allowed"),
                                                 ("DATA", "554 5.6.0 message refused as spam")])
async def test_a_5xx_at_mail_from_or_data_is_permanent_not_a_bounce(store, server, command, reply):
    peer, port = server
    peer.script(command, reply)
    with pytest.raises(cb.PermanentError) as err:
        await connector(store, port).act(email())
    assert not isinstance(err.value, cb.Bounced)
    assert (f"at {'MAIL FROM' if command == 'MAIL' else 'DATA'}" in str(err.value)
            and reply.split()[0] in str(err.value))
    assert outbox_rows(store)[0]["status"] == "failed"


async def test_a_closed_port_is_transient(store):
    with pytest.raises(cb.TransientError) as err:
        await connector(store, free_port()).act(email())
    assert "127.0.0.1" in str(err.value)
    assert outbox_rows(store)[0]["status"] == "pending"


@pytest.mark.parametrize(("field", "value"), [("Subject", "Hi\r\nBcc: everyone@victim.test"),
                                              ("Subject", "Hi\nX-Evil: 1"),
                                              ("Subject", "Hi\u2028there"),
                                              ("To", "ada@customer.test\r\nBcc: everyone@victim.test"),
                                              ("unsubscribe URL", "https://acme.test/u/x\r\nBcc: a@b.test")])
async def test_header_injection_is_refused_before_connecting(store, server, field, value):
    peer, port = server
    action = {"Subject": lambda: email(subject=value), "To": lambda: email(to=value),
              "unsubscribe URL": lambda: email(unsubscribe_url=value)}[field]()
    with pytest.raises(cb.PermanentError) as err:
        await connector(store, port).act(action)
    assert f"header injection refused: {field}" in str(err.value)
    assert peer.commands == [] and peer.messages == []
    assert outbox_rows(store)[0]["status"] == "failed"


# ---------------------------------------------------------------- TLS and AUTH


async def test_starttls_and_auth_with_the_servers_own_ca(store, tls):
    server_ctx, ca = tls
    with smtp_server(starttls=server_ctx, logins={"playbook": PASSWORD}) as (peer, port):
        result = await connector(store, port, security="starttls", ca_file=ca, username="playbook",
                                 password=PASSWORD).act(email())
    assert peer.logins == ["playbook"] and len(peer.messages) == 1 and not result.duplicate


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # aiosmtpd cannot see implicit TLS
async def test_implicit_tls_with_auth(store, tls):
    server_ctx, ca = tls
    with smtp_server(implicit_tls=server_ctx, logins={"playbook": PASSWORD}) as (peer, port):
        await connector(store, port, security="tls", ca_file=ca, username="playbook", password=PASSWORD).act(email())
    assert peer.logins == ["playbook"] and len(peer.messages) == 1


async def test_a_refused_login_names_the_settings_never_the_password(store, tls, caplog):
    server_ctx, ca = tls
    caplog.set_level(logging.DEBUG)
    with smtp_server(starttls=server_ctx, logins={"playbook": "another"}) as (peer, port):
        with pytest.raises(cb.PermanentError) as err:
            await connector(store, port, security="starttls", ca_file=ca, username="playbook",
                            password=PASSWORD).act(email())
    text = str(err.value)
    assert "PLAYBOOK_SMTP_USERNAME" in text and "PLAYBOOK_SMTP_PASSWORD" in text and "535" in text
    assert PASSWORD not in text and PASSWORD not in caplog.text and PASSWORD not in str(outbox_rows(store))
    assert peer.messages == []


async def test_a_certificate_that_does_not_verify_is_permanent_and_names_the_ca_setting(store, tls):
    server_ctx, _ = tls
    with smtp_server(starttls=server_ctx) as (peer, port):
        with pytest.raises(cb.PermanentError) as err:
            await connector(store, port, security="starttls").act(email())
    assert "PLAYBOOK_SMTP_CA_FILE" in str(err.value) and peer.messages == []


async def test_starttls_asked_of_a_server_without_it_is_permanent_and_names_the_setting(store, server):
    _, port = server
    with pytest.raises(cb.PermanentError) as err:
        await connector(store, port, security="starttls").act(email())
    assert "PLAYBOOK_SMTP_SECURITY" in str(err.value)


# ---------------------------------------------------------------- settings


def test_settings_come_from_the_environment_and_the_smtp_table(tmp_path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('[smtp]\nhost = "smtp.acme.test"\nsecurity = "tls"\nusername = "u"\npassword = "from-file"\n')
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(file))
    monkeypatch.setenv("PLAYBOOK_SMTP_PASSWORD", PASSWORD)
    s = load_settings()
    assert (s.host, s.security, s.port_number, s.username) == ("smtp.acme.test", "tls", 465, "u")
    assert s.password is not None and s.password.get_secret_value() == PASSWORD  # the environment wins
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)


def test_a_misspelt_smtp_setting_is_refused_with_a_suggestion(tmp_path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('[smtp]\nhots = "smtp.acme.test"\n')
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(file))
    with pytest.raises(Exception, match="did you mean 'host'"):
        load_settings()


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_SMTP_SECURITY", "ssl")
    with pytest.raises(SmtpSettingsError, match="PLAYBOOK_SMTP_SECURITY"):
        load_settings()


def test_the_email_connector_setting_builds_smtp_and_needs_a_sender(store, monkeypatch, tmp_path):
    from connectors.settings import load_connectors

    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "smtp")
    with pytest.raises(mail.MailSettingsError, match="PLAYBOOK_EMAIL_FROM_ADDRESS"):
        load_connectors(store)
    monkeypatch.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", SENDER)
    built = load_connectors(store)
    assert isinstance(built.by_kind["email"], SmtpConnector)
    assert type(built.by_kind["task"]).__name__ == "StoreConnector"


def test_choosing_smtp_without_a_sender_stops_before_anything_starts(monkeypatch, tmp_path):
    from connectors.settings import choose

    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "smtp")
    with pytest.raises(mail.MailSettingsError, match="PLAYBOOK_EMAIL_FROM_ADDRESS"):
        choose()
    monkeypatch.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", SENDER)
    monkeypatch.setenv("PLAYBOOK_SMTP_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(SmtpSettingsError, match="PLAYBOOK_SMTP_CA_FILE: cannot read"):
        choose()


async def test_smtp_refuses_kinds_other_than_email(store, server):
    _, port = server
    task = cb.NewTask(key="k", account_id="acme", actor="play:p", play="p", step="s", requested_at=AT,
                      assignee="carol", title="Call")
    with pytest.raises(cb.PermanentError, match="PLAYBOOK_CONNECTOR_TASK"):
        await connector(store, port).act(task)
