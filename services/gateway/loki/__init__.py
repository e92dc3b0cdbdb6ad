"""Loki's HTTP API: the push that Promtail and Grafana Alloy send (push.py), stream
labels mapped onto our entries (labels.py, translate.py), Loki's plain-text answers."""
