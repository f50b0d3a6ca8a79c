"""A producer in Python (redis-py 4.2+): enqueue, read a job's status,
cancel one, wait for one's outcome. redq's own test suite runs it against a
private server (tests/examples.rs); run it yourself with a URL, a queue name
and the name of a queue a daemon serves (for the wait):

    python3 examples/python/producer.py redis://127.0.0.1:6379 emails reports

It prints one JSON object per step.
"""

import json
import sys

import redis

url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379"
queue = sys.argv[2] if len(sys.argv) > 2 else "emails"
served = sys.argv[3] if len(sys.argv) > 3 else "reports"
base = "redq:{%s}" % queue  # the queue's key: <prefix>:{<queue>}

r = redis.Redis.from_url(url, decode_responses=True)


def show(step, value):
    print(json.dumps({"step": step, "value": value}), flush=True)


# Enqueue: the reply is the job's id.
job_id = r.fcall("redq_enqueue", 1, base, json.dumps({"payload": {"to": "ann@example.com"}, "priority": 5}))
show("enqueued", job_id)

# A bad document is refused, saying which field and why; nothing is written.
try:
    r.fcall("redq_enqueue", 1, base, json.dumps({"payload": {}, "priority": "high"}))
except redis.ResponseError as e:
    show("refused", str(e))

# Its status: a JSON object (state, attempts, result, last_error).
show("status", json.loads(r.fcall_ro("redq_status", 1, base, job_id)))

# A delayed job, cancelled before it runs: the reply is where it was.
later = r.fcall("redq_enqueue", 1, base, json.dumps({"payload": {}, "delay_ms": 60000}))
show("cancelled", r.fcall("redq_cancel", 1, base, later))
show("status after cancel", json.loads(r.fcall_ro("redq_status", 1, base, later)))

# Keep a job's outcome for 10 minutes and wait up to 30 s for it. BLMOVE
# from the outcome key onto itself answers at once if the job has ended,
# or when it ends, and leaves the outcome for other readers. It blocks, so
# it gets a connection of its own.
served_base = "redq:{%s}" % served
job = r.fcall("redq_enqueue", 1, served_base, json.dumps({"payload": {"report": 7}, "outcome_ttl_ms": 600000}))
key = "%s:outcome:%s" % (served_base, job)
waiter = redis.Redis.from_url(url, decode_responses=True)
outcome = waiter.blmove(key, key, 30, "RIGHT", "RIGHT")
show("outcome", json.loads(outcome) if outcome else None)
