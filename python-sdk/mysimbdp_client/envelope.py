"""The envelope: several numbered records in one MQTT message, as the platform's inbox writer reads them.

A copy of the encoder in the platform's ``mysimbdp/inbox.py`` (the client is installed without the
platform); ``tests/test_python_sdk.py`` checks that both encode byte for byte alike and that the platform
decodes what this one encodes.

    MB1 <publisher: 16 hex digits> <first record's number> <size>,<size>,...\\n<records, one after the other>
"""

from __future__ import annotations

import re

ENVELOPE_MAGIC = b"MB1 "
MAX_ENVELOPE_RECORDS = 4096
PUBLISHER_ID = re.compile(r"[0-9a-f]{16}")


def encode_envelope(publisher: str, first: int, records: list[bytes]) -> bytes:
    sizes = ",".join(str(len(r)) for r in records)
    return ENVELOPE_MAGIC + f"{publisher} {first} {sizes}\n".encode() + b"".join(records)
