"""E-mail over SMTP: a plain-text message to the channel's addresses, through the relay
of the SMTP_* settings. smtplib runs in a worker thread (it blocks); its socket timeout
bounds each exchange with the relay, and the sender's deadline bounds the whole."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from services.evaluator.channels import facts
from services.evaluator.channels.base import (
    EVENT_ID_HEADER,
    NOTIFICATION_ID_HEADER,
    DeliveryError,
    Notification,
    Payload,
    SmtpConfig,
    Transport,
)
from shared.alerts import EmailChannel


def message(
    notification: Notification, channel: EmailChannel, p: Payload, sender: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = facts.title(p)
    msg["From"] = sender
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = formatdate(usegmt=True)
    # The same Message-ID on every try: mail systems that drop duplicates by it (Gmail
    # does) hide a repeated delivery.
    msg["Message-ID"] = f"<{notification.id}@minisource-log>"
    msg[NOTIFICATION_ID_HEADER] = str(notification.id)
    msg[EVENT_ID_HEADER] = str(notification.event_id)
    width = max(len(label) for label, _ in facts.lines(p)) + 1
    body = [f"{label + ':':<{width}} {value}" for label, value in facts.lines(p)]
    body += ["", f"Tenant {p.tenant_id}, rule {p.alert.id}, event {p.event_id}."]
    msg.set_content("\n".join(body) + "\n")
    return msg


def _deliver(
    config: SmtpConfig, msg: EmailMessage, recipients: list[str]
) -> dict[str, tuple[int, bytes]]:
    """Blocking: one SMTP session. Returns the recipients the relay refused (the others
    were accepted)."""
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds) as smtp:
        smtp.ehlo()
        if config.starttls:
            smtp.starttls(context=config.tls_context or ssl.create_default_context())
            smtp.ehlo()
        if config.user:
            smtp.login(config.user, config.password)
        return smtp.send_message(msg, from_addr=config.sender, to_addrs=recipients)


async def send(
    transport: Transport, notification: Notification, channel: EmailChannel, p: Payload
) -> str | None:
    """Send the message; return a remark when some recipients were refused (the message
    went to the others: it counts as delivered, and the remark is recorded)."""
    config = transport.smtp
    if not config.host:
        raise DeliveryError(
            "e-mail is not configured: set SMTP_HOST (and SMTP_PORT, SMTP_FROM) on the evaluator",
            permanent=True,
        )
    msg = message(notification, channel, p, config.sender)
    timeout = min(config.timeout_seconds, transport.deadline_seconds)
    try:
        # On timeout the thread is abandoned, not stopped: its socket timeout ends it.
        refused = await asyncio.wait_for(
            asyncio.to_thread(_deliver, config, msg, list(channel.to)), timeout
        )
    except TimeoutError as exc:
        raise DeliveryError(f"the SMTP relay did not finish within {timeout:g} s") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(
            f"every recipient was refused: {_refusals(exc.recipients)}",
            permanent=all(code >= 500 for code in codes),
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(
            f"the SMTP relay does not offer it: {exc} (SMTP_STARTTLS=false for a relay "
            "without STARTTLS)",
            permanent=True,
        ) from exc
    except smtplib.SMTPResponseException as exc:
        # RFC 5321: 5yz is a permanent refusal (bad sender, failed login), 4yz transient.
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        raise DeliveryError(
            f"SMTP {exc.smtp_code}: {text}", permanent=exc.smtp_code >= 500
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"the SMTP relay's certificate: {exc.verify_message}", permanent=True
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP relay unreachable: {type(exc).__name__}: {exc}") from exc
    return f"refused recipients: {_refusals(refused)}" if refused else None


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{address} ({code} {reply.decode(errors='replace')})"
        for address, (code, reply) in sorted(refused.items())
    )
