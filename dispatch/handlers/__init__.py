"""Handlers: plain functions, one per command, each one transaction.

Every handler is idempotent. A message from Kafka is applied once per `event_id` (the
inbox), an SMS is queued once per (event, recipient, kind), and every transition checks
the current state first, so a replay changes nothing and sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatch import commands as c
from dispatch.handlers import (
    centers,
    deadlines,
    delivery,
    dispatcher,
    inbound,
    intake,
    matching,
    privacy,
    registration,
)
from dispatch.handlers.registration import ROLES, hash_token

__all__ = ["HANDLERS", "ROLES", "hash_token"]

HANDLERS: dict[type[c.Command], Callable[..., Any]] = {
    c.RegisterCarer: registration.register_carer,
    c.SetDuty: registration.set_duty,
    c.RegisterFamily: registration.register_family,
    c.CreateToken: registration.create_token,
    c.SubmitRequest: intake.submit_request,
    c.StartMatching: matching.start_matching,
    c.AddShift: centers.add_shift,
    c.ConfirmBooking: centers.confirm_booking,
    c.SweepDeadlines: deadlines.sweep_deadlines,
    c.ReceiveSms: inbound.receive_sms,
    c.HandleInboundSms: inbound.handle_inbound_sms,
    c.DeliverNotification: delivery.deliver_notification,
    c.DeliverNotifications: delivery.deliver_notifications,
    c.SweepNotifications: delivery.sweep_notifications,
    c.RecordDeliveryStatus: delivery.record_delivery_status,
    c.CancelRequest: dispatcher.cancel_request,
    c.AssignCarer: dispatcher.assign_carer,
    c.ReofferRequest: dispatcher.reoffer_request,
    c.AddNote: dispatcher.add_note,
    c.ReadFamily: privacy.read_family,
    c.ReadRequest: privacy.read_request,
    c.PurgePersonalData: privacy.purge_personal_data,
    c.RotateDataKey: privacy.rotate_data_key,
    c.AcknowledgeEscalation: dispatcher.acknowledge_escalation,
}
