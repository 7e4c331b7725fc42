"""E-mail: a plain-text message through the configured SMTP relay (STARTTLS, SSL, login optional)."""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from vigil.config import Settings
from vigil.errors import InvalidInput
from vigil.server.notify.base import TEST_EVENT, Channel, Message, Outcome

TIMEOUT = 15.0
MAX_RECIPIENTS = 20
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})*$")


def _one_line(text: str, limit: int = 200) -> str:
    """Header-safe: no line breaks (header injection), bounded length."""
    return " ".join(str(text).split())[:limit]


def subject(event: str, payload: dict[str, Any]) -> str:
    """``[Vigil HIGH] Reverse shell on vm-web-1``."""
    data = payload.get("data") or {}
    subj = payload.get("subject") or {}
    tag = "TEST" if event == TEST_EVENT else str(payload.get("severity") or "info").upper()
    title = data.get("title") or f"{subj.get('type', 'event')} {subj.get('id', '')}".strip()
    vm = (data.get("vm") or {}).get("name") if isinstance(data.get("vm"), dict) else None
    return _one_line(f"[Vigil {tag}] {title}" + (f" on {vm}" if vm else ""))


def body(message: Message) -> str:
    """The plain-text body: the facts a responder reads first, then the whole payload."""
    payload = message.payload
    data: dict[str, Any] = payload.get("data") or {}
    subj = payload.get("subject") or {}
    vm = data.get("vm") if isinstance(data.get("vm"), dict) else {}
    rows = [
        ("Event", message.event),
        ("Severity", payload.get("severity")),
        ("Tenant", (payload.get("tenant") or {}).get("name") or payload.get("tenant_id")),
        (str(subj.get("type", "subject")).capitalize(), subj.get("id")),
        ("Status", data.get("status")),
        ("VM", vm.get("name") if vm else None),
        ("Observed", data.get("observed_at") or data.get("first_seen")),
        ("Reason", data.get("reason")),
        ("Techniques", ", ".join(map(str, data.get("techniques") or [])) or None),
        ("Source IP", data.get("src_ip")),
    ]
    lines = [str(data.get("title") or subject(message.event, payload)), ""]
    lines += [f"{label + ':':<12} {value}" for label, value in rows if value not in (None, "")]
    lines += ["", "Details:", json.dumps(data, indent=2, sort_keys=True, default=str), "",
              "-- ", f"Sent by Vigil (delivery {message.delivery_id}, {message.event})."]
    return "\n".join(lines) + "\n"


class EmailChannel(Channel):
    """Send to one or more addresses (the target: addresses separated by commas)."""

    kind = "email"

    @classmethod
    def validate_target(cls, target: str, *, settings: Settings) -> str:
        if not settings.smtp_host:
            raise InvalidInput("e-mail channels need an SMTP relay: set smtp_host (VIGIL_SMTP_HOST) "
                               "in the server's settings first")
        addresses: list[str] = []
        for raw in target.split(","):
            address = raw.strip()
            if not address:
                continue
            if not _ADDRESS.match(address):
                raise InvalidInput(f"{address!r} is not an e-mail address (like soc@example.org)")
            if address.lower() not in (a.lower() for a in addresses):
                addresses.append(address)
        if not addresses:
            raise InvalidInput("give at least one e-mail address (several separated by commas)")
        if len(addresses) > MAX_RECIPIENTS:
            raise InvalidInput(f"at most {MAX_RECIPIENTS} recipients per channel: use a list "
                               "address for more")
        return ",".join(addresses)

    @classmethod
    def redact_target(cls, target: str) -> str:
        return ",".join(a[:1] + "…@" + a.rpartition("@")[2] for a in target.split(","))

    @property
    def recipients(self) -> list[str]:
        return [a for a in self.target.split(",") if a]

    def build(self, message: Message) -> EmailMessage:
        sender = self.settings.smtp_from
        msg = EmailMessage()
        msg["Subject"] = subject(message.event, message.payload)
        msg["From"] = sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(usegmt=True)
        # an explicit domain: make_msgid() would otherwise look up this host's FQDN (DNS)
        msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "vigil.invalid")
        msg["X-Vigil-Event"] = message.event
        msg["X-Vigil-Delivery"] = str(message.delivery_id)
        msg.set_content(body(message))
        return msg

    def send(self, message: Message) -> Outcome:
        s = self.settings
        if not s.smtp_host:
            return Outcome(False, None, "no SMTP relay is configured: set smtp_host (VIGIL_SMTP_HOST)")
        msg = self.build(message)
        context = ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if s.smtp_ssl:
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=TIMEOUT, context=context)
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=TIMEOUT)
            with smtp:
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=context)
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password or "")
                refused = smtp.send_message(msg, from_addr=s.smtp_from, to_addrs=self.recipients)
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
                else str(exc.smtp_error)
            return Outcome(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {text}"[:500])
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
        if refused:  # some recipients refused, the others accepted: retrying would duplicate
            return Outcome(True, 250, f"refused by the relay: {', '.join(sorted(refused))}")
        return Outcome(True, 250)
