import os
import sys

sys.stdout.buffer.write(b"\x00\xff\xfe garbage \x1b[31m" * 100 + b"\n")
with open(os.path.join(os.environ["MYSIMBDP_OUTPUT_DIR"], "result.json"), "w") as fh:
    fh.write("rows: lots")
