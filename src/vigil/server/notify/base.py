"""The channel registry: each kind of channel (webhook, e-mail) is a class that registers itself.

A channel checks its target when it is created (``validate_target``) and sends one message
(``send``), returning an :class:`Outcome` instead of raising: the dispatcher decides from it
whether the delivery is done or retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vigil.config import Settings
from vigil.errors import InvalidInput

#: severities in increasing order; a channel gets what is at least its ``min_severity``
SEVERITIES = ("low", "medium", "high", "critical")
#: what a delivery can be about; ``notification.test`` is sent by the "test" button only
EVENTS = ("alert.created", "incident.created", "incident.updated")
TEST_EVENT = "notification.test"


def severity_rank(severity: str) -> int:
    """0 for low .. 3 for critical; raises for anything else."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise InvalidInput(
            f"unknown severity {severity!r}: choose one of {', '.join(SEVERITIES)}"
        ) from None


@dataclass(frozen=True)
class Message:
    """One delivery as a channel sees it: its id, event and JSON payload."""

    delivery_id: int
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What a send did: delivered or not, the receiver's status code, what went wrong."""

    delivered: bool
    response_status: int | None = None
    error: str | None = None


class Channel:
    """Base of every channel kind; subclasses with a ``kind`` register themselves."""

    registry: ClassVar[dict[str, type[Channel]]] = {}

    kind: ClassVar[str] = ""
    #: whether messages are signed with a per-channel secret the user can reveal
    signed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.kind:
            return
        if cls.kind in Channel.registry and Channel.registry[cls.kind] is not cls:
            raise ValueError(f"two notification channels are of kind {cls.kind!r}")
        Channel.registry[cls.kind] = cls

    def __init__(self, *, channel_id: int, target: str, settings: Settings) -> None:
        self.channel_id = channel_id
        self.target = target
        self.settings = settings

    @classmethod
    def validate_target(cls, target: str, *, settings: Settings) -> str:
        """The target in its stored form, or :class:`InvalidInput` saying what to fix."""
        raise NotImplementedError

    @classmethod
    def redact_target(cls, target: str) -> str:
        """The target as shown to users who may not manage channels."""
        return target

    def send(self, message: Message) -> Outcome:
        """Send one message; never raises for what the network or the receiver does."""
        raise NotImplementedError


def channel_class(kind: str) -> type[Channel]:
    try:
        return Channel.registry[kind]
    except KeyError:
        raise InvalidInput(
            f"unknown channel kind {kind!r}: choose one of {', '.join(sorted(Channel.registry))}"
        ) from None


def make_channel(kind: str, *, channel_id: int, target: str, settings: Settings) -> Channel:
    return channel_class(kind)(channel_id=channel_id, target=target, settings=settings)
