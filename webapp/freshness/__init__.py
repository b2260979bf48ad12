"""How an open email log stays fresh without rendering it again when nothing changed.

- counters: a Redis counter per client's log, bumped after every commit that changed one of its
  emails (and announced on the log's channel); a rendered log carries its value in its version.
- fastpoll: the one question "has this log changed?" (log_unchanged), and the WSGI middleware that
  answers an unchanged poll with 204 in front of Flask.
- stream: the event stream that tells an open log at once that it changed (Redis pub/sub).
- known: the counters and live sessions a web process read, kept current by its stream's feed,
  so an unchanged poll needs no Redis round trip.
- quota: how many streams one user may hold across processes.
- row_cache: rendered log rows kept per process, so a changed log renders only its changed rows.
"""
