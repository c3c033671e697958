"""Which command a worker runs for a message: the agents' decode → command mapping, pure.

Kept apart from the Faust app so that anything replaying the log in-process (the dispatch
simulator, infra/simulate/) runs exactly what the worker runs, without importing Faust.
"""

from __future__ import annotations

from dispatch import commands as c
from schemas.envelope import Envelope


def command_for(envelope: Envelope) -> c.Command | None:
    """The command for this message, or None for a message no agent acts on (an event that
    only the console and the board read, such as `request.assigned`)."""
    if envelope.type == "request.received":
        return c.StartMatching(request_id=envelope.payload["request_id"],
                               event_id=envelope.event_id)
    if envelope.type == "sms.received":
        return c.HandleInboundSms(inbound_id=envelope.payload["inbound_id"],
                                  event_id=envelope.event_id)
    if envelope.type == "sms.requested":
        return c.DeliverNotification(notification_id=envelope.payload["notification_id"])
    return None
