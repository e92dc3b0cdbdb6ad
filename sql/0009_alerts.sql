-- Alerting (issue 17): rules (log_alerts, from 0001), their state per group, the history
-- of state changes, and the notification outbox.
--
-- A rule is evaluated once per tick (ALERT_EVAL_INTERVAL): an evaluator claims it by
-- moving `evaluated_tick` forward, so two evaluators never evaluate one rule for one tick.
-- A state change writes its event and one outbox row per channel in the same
-- transaction as the new state: a notification exists exactly when the change does.

-- The scope that manages alert rules (or `admin`).
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'query', 'admin', 'alerts']);

ALTER TABLE log_alerts
    ADD COLUMN IF NOT EXISTS condition text NOT NULL DEFAULT 'above'
        CHECK (condition IN ('above', 'below')),
    ADD COLUMN IF NOT EXISTS evaluated_tick bigint NOT NULL DEFAULT 0,
    -- What the last evaluation saw (window, counts per group): shown when a rule is read.
    ADD COLUMN IF NOT EXISTS last_evaluation jsonb,
    -- A deleted rule is kept (its events refer to it) but never listed or evaluated.
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
ALTER TABLE log_alerts DROP CONSTRAINT IF EXISTS log_alerts_severity_check;
ALTER TABLE log_alerts ADD CONSTRAINT log_alerts_severity_check
    CHECK (severity IN ('info', 'warning', 'critical'));
-- Listing a tenant's rules, and the evaluator's claim of the enabled ones.
CREATE INDEX IF NOT EXISTS log_alerts_tenant_created
    ON log_alerts (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS log_alerts_due
    ON log_alerts (evaluated_tick) WHERE enabled AND deleted_at IS NULL;

-- One row per rule and group (group_key '{}' when the rule has no group_by): whether it
-- fires, since when, and the event that opened it.
CREATE TABLE IF NOT EXISTS alert_states (
    alert_id       uuid        NOT NULL REFERENCES log_alerts (id) ON DELETE CASCADE,
    group_key      jsonb       NOT NULL,
    tenant_id      uuid        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('ok', 'firing')),
    since          timestamptz NOT NULL,
    last_count     bigint      NOT NULL,
    open_event_id  uuid,
    last_fired_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, group_key)
);

-- Every state change: `firing` when a group crosses the threshold, `resolved` when it
-- stops. Kept after the rule is deleted (history).
CREATE TABLE IF NOT EXISTS alert_events (
    id             uuid        PRIMARY KEY,
    tenant_id      uuid        NOT NULL,
    alert_id       uuid        NOT NULL,
    group_key      jsonb       NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('firing', 'resolved')),
    observed_count bigint      NOT NULL,
    threshold      integer     NOT NULL,
    condition      text        NOT NULL,
    window_mins    integer     NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    started_at     timestamptz NOT NULL,
    resolved_at    timestamptz,
    reason         text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_events_alert
    ON alert_events (tenant_id, alert_id, created_at DESC, id DESC);

-- The outbox: one row per event and channel, written with the event. Senders claim due
-- rows (FOR UPDATE SKIP LOCKED, then a lease in `claimed_until`), send, and mark them.
-- `channel` is the channel as it was when the event happened, secret included: it never
-- leaves the database through the API.
CREATE TABLE IF NOT EXISTS alert_notifications (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    alert_id        uuid        NOT NULL,
    event_id        uuid        NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    channel_index   integer     NOT NULL,
    channel         jsonb       NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_error      text,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, channel_index)
);
CREATE INDEX IF NOT EXISTS alert_notifications_due
    ON alert_notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS alert_notifications_event ON alert_notifications (event_id);

-- The second wall for the API's reads of states, events and notification status.
SELECT enable_tenant_rls('alert_states');
SELECT enable_tenant_rls('alert_events');
SELECT enable_tenant_rls('alert_notifications');
