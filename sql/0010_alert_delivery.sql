-- Notification delivery (issue 17): one destination hears of one rule group's changes in
-- order. A sender claims a row only when no older notification of the same rule, group
-- and channel is still pending (services/evaluator/outbox.py); this index finds those
-- older rows among the pending ones of the rule, not among all pending rows.
CREATE INDEX IF NOT EXISTS alert_notifications_pending_by_alert
    ON alert_notifications (alert_id, created_at) WHERE status = 'pending';
