"""Slack's own Python SDK (slack_sdk) against a live `grayscale serve`: requests signed by
slack_sdk's SignatureVerifier as Slack signs them, for the Events API and a slash command.
Usage: slack_sdk_check.py ADMIN_URL SIGNING_SECRET   (exits 1 naming each check that failed)"""
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from slack_sdk.signature import SignatureVerifier

admin, secret = sys.argv[1], sys.argv[2]
verifier = SignatureVerifier(signing_secret=secret)
failures = []


def check(name, condition, detail=""):
    print(("ok     " if condition else "FAILED ") + name + ("" if condition else f": {detail}"))
    if not condition:
        failures.append(name)


def post(path, body, content_type, timestamp=None, sign=True, extra=None):
    fresh = timestamp is None
    timestamp = str(int(time.time())) if fresh else timestamp
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp}
    if sign:
        headers["X-Slack-Signature"] = verifier.generate_signature(timestamp=timestamp, body=body)
        # slack_sdk's own verifier accepts what it signed (it refuses a stale timestamp, as the endpoint must).
        assert verifier.is_valid(body=body, timestamp=timestamp, signature=headers["X-Slack-Signature"]) == fresh
    headers.update(extra or {})
    request = urllib.request.Request(admin + path, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get(path):
    with urllib.request.urlopen(admin + path, timeout=30) as response:
        return json.loads(response.read().decode())


def audit(actor):
    return [entry for entry in get("/api/v1/audit?service=engine&limit=1000") if entry["actor"] == actor]


def canary_range():
    canary = get("/api/v1/services/engine/split").get("canary")
    return canary["range"]["text"] if canary else None


def eventually(condition, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# Events API: the URL verification Slack sends when the request URL is saved.
status, body = post("/slack/events", json.dumps({"type": "url_verification", "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}), "application/json")
check("url_verification answers the challenge", status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in body, f"{status} {body}")

# An operator's mention changes the split, once, whatever Slack's retries.
before = canary_range()
check("the split is not already [30 - 45]", before != "[30 - 45]", before)
mention = {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback", "event_id": "Ev0SDK1", "event_time": int(time.time()),
           "event": {"type": "app_mention", "user": "U0OPERATOR", "text": "<@U0BOT> -g -m engine -p 30:45", "ts": "1515449522.000016",
                     "channel": "C0RELEASE", "event_ts": "1515449522000016"}}
status, _ = post("/slack/events", json.dumps(mention), "application/json")
check("a signed app_mention is acknowledged", status == 200, status)
check("the operator's command ran", eventually(lambda: canary_range() == "[30 - 45]"), get("/api/v1/services/engine/split"))
for retry in ("1", "2"):
    status, _ = post("/slack/events", json.dumps(mention), "application/json", extra={"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"})
    check(f"retry {retry} of the same event is acknowledged", status == 200, status)
time.sleep(1)
check("the retried event ran once", len([e for e in audit("U0OPERATOR") if (e.get("command") or "").endswith("-p 30:45")]) == 1, audit("U0OPERATOR"))

# Someone who is not an operator is refused, and audited as refused.
stranger = dict(mention, event_id="Ev0SDK2", event=dict(mention["event"], user="U0STRANGER", text="<@U0BOT> -g -m engine -p 90"))
status, _ = post("/slack/events", json.dumps(stranger), "application/json")
check("a stranger's mention is acknowledged", status == 200, status)
check("and refused, not run", eventually(lambda: any(e["outcome"] == "refused" for e in audit("U0STRANGER")))
      and canary_range() == "[30 - 45]", audit("U0STRANGER"))

# A slash command, form-encoded as Slack posts it (no response_url: answered at once).
form = urllib.parse.urlencode({"token": "x", "team_id": "T1", "team_domain": "tencent", "channel_id": "C0RELEASE", "channel_name": "serverless-tencent",
                               "user_id": "U0OPERATOR", "user_name": "kaiyuzeng", "command": "/grayscale", "text": "-l -m engine",
                               "api_app_id": "A1", "trigger_id": "13345224609.738474920.8088930838d88f008e0"})
status, body = post("/slack/commands", form, "application/x-www-form-urlencoded")
check("a signed slash command is answered with the bot's reply", status == 200 and "Stable Version 7" in body, f"{status} {body}")

# What Slack would never send: each refused with 401 and changes nothing.
status, _ = post("/slack/commands", form, "application/x-www-form-urlencoded", sign=False)
check("an unsigned request is refused", status == 401, status)
status, _ = post("/slack/commands", form, "application/x-www-form-urlencoded", timestamp=str(int(time.time()) - 600))
check("a request signed ten minutes ago is refused", status == 401, status)
stamp = str(int(time.time()))
signature = verifier.generate_signature(timestamp=stamp, body=form)
status, _ = post("/slack/commands", form.replace("-l", "-r"), "application/x-www-form-urlencoded", sign=False,
                 extra={"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature})
check("a body changed after signing is refused", status == 401, status)
check("nothing was rolled back", canary_range() == "[30 - 45]", canary_range())

sys.exit(1 if failures else 0)
