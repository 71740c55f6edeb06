"""A stream app whose reports try to make the stream controller deaf or slow: deeply nested JSON, an
oversize report, bytes that are not UTF-8, a report claiming to be another tenant's, numbers no column can
hold, and a flood of thousands of reports; then it reports like a well-behaved instance, every second."""

import json
import os
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

env = os.environ
client = mqtt.Client(
    CallbackAPIVersion.VERSION2, client_id=env["MYSIMBDP_MQTT_CLIENT_ID"], protocol=mqtt.MQTTv311, clean_session=False
)
client.username_pw_set(env["MYSIMBDP_MQTT_USERNAME"], env["MYSIMBDP_MQTT_PASSWORD"])
client.connect(env["MYSIMBDP_MQTT_HOST"], int(env["MYSIMBDP_MQTT_PORT"]), keepalive=30)
client.loop_start()
topic = env["MYSIMBDP_REPORT_TOPIC"]
tenant, instance = env["MYSIMBDP_TENANT"], env["MYSIMBDP_INSTANCE"]
started = time.time()


def report(**override) -> bytes:
    now = time.time()
    r = {
        "tenant": tenant,
        "instance": instance,
        "window_start": now - 1,
        "window_end": now,
        "messages": 0,
        "bytes": 0,
        "avg_ms": 0.0,
        "p95_ms": 0.0,
        "errors": 0,
        "rejected": 0,
        "pending": 0,
        "started_at": started,
        "first_message_at": None,
    }
    r.update(override)
    return json.dumps(r).encode()


nasty = [
    b"[" * 5000 + b"]" * 5000,
    b"{" * 3000,
    b'{"a": ' * 2000 + b"1" + b"}" * 2000,
    b"\xff\xfe\x00" * 1000,
    b" " * 9000 + report(),
    report(tenant="someoneelse"),
    report(messages=10**30),
    report(avg_ms=float("inf")) if False else report(avg_ms="NaN"),
    b"1" * 5000,
]
for payload in nasty:
    client.publish(topic, payload, qos=1).wait_for_publish(5)
print("nasty reports sent", flush=True)
for _ in range(3000):  # a flood
    client.publish(topic, b"[" * 4000, qos=0)
print("flood sent", flush=True)
while True:
    client.publish(topic, report(), qos=1)
    time.sleep(1)
