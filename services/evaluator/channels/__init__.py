"""Notification channels: each renders an alert's payload its own way and delivers it
once (webhook, Slack-compatible, e-mail, Alertmanager); `dispatch.send` picks one."""
