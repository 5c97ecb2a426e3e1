"""The SMTP client: one session per worker pass, and what the server's answers mean for a retry.

A message is built by the email service (qualify.service.email.sending); this module connects,
secures, logs in and sends it, and says whether it went out, may be tried again later
(`transient`: a 4xx answer, a broken connection) or never will (`permanent`: a 5xx answer).
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Literal

from qualify.settings import Settings

ERROR_TEXT = 300  # characters of an SMTP failure kept in `last_error`


@dataclass(frozen=True, slots=True)
class SmtpResult:
    """What one send came to, and the server's answer when it was not `sent`."""

    status: Literal["sent", "transient", "permanent"]
    error: str | None = None


class SmtpUnavailable(Exception):
    """Connecting, securing or logging in failed: nothing can be sent this pass."""


class SmtpSender:
    """One SMTP session for a pass, opened at the first email and reused; reopened after a broken one."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self.settings = settings
        self.host = settings.smtp_host
        default_port = {"none": 25, "starttls": 587, "tls": 465}[settings.smtp_security]
        self.port = settings.smtp_port or default_port
        self._session: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s, timeout = self.settings, self.settings.smtp_timeout
        session: smtplib.SMTP | None = None
        try:
            if s.smtp_security == "tls":
                session = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=ssl.create_default_context())
            else:
                session = smtplib.SMTP(self.host, self.port, timeout=timeout)
                if s.smtp_security == "starttls":
                    session.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                session.login(s.smtp_username, password)
        except (smtplib.SMTPException, OSError) as error:
            if session is not None:
                _close_quietly(session)
            raise SmtpUnavailable(f"{self.host}:{self.port}: {_describe(error)}") from None
        return session

    def send(self, message: EmailMessage, to_address: str) -> SmtpResult:
        """Send one message; SmtpUnavailable when no session could be opened."""
        if self._session is None:
            self._session = self._connect()
        assert self.settings.email_from is not None
        sender = parseaddr(self.settings.email_from)[1]
        try:
            self._session.send_message(message, from_addr=sender, to_addrs=[to_address])
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients.get(to_address, (450, b"recipient refused"))
            return _classified(code, text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
            return _classified(error.smtp_code, error.smtp_error)  # the session was reset and stays usable
        except smtplib.SMTPNotSupportedError as error:  # e.g. a non-ASCII address to a server without SMTPUTF8
            return SmtpResult("permanent", _describe(error))
        except (smtplib.SMTPException, OSError) as error:
            self.close()  # disconnected or in an unknown state: a fresh session for the next email
            return SmtpResult("transient", _describe(error))
        return SmtpResult("sent")

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.quit()
            except (smtplib.SMTPException, OSError):
                _close_quietly(session)

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _close_quietly(session: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        session.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        return f"SMTP {error.smtp_code} {text}"[:ERROR_TEXT]
    return f"{type(error).__name__}: {error}"[:ERROR_TEXT]


def _classified(code: int, text: bytes | str) -> SmtpResult:
    """5xx refuses for good; anything else (4xx: try later) is transient."""
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    error = f"SMTP {code} {message}"[:ERROR_TEXT]
    return SmtpResult("permanent" if 500 <= code < 600 else "transient", error)
