"""notes, streamed: each message is one line "id,title,body,amount,at"."""

from table import NOTES
from mysimbdp_app.stream import run_stream

raise SystemExit(run_stream(NOTES, ["id", "title", "body", "amount", "at"]))
