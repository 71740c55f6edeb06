"""A batch app that tries to trip the platform up with what it leaves in /output; the uploaded file's
name says which trick."""

import json
import os

out = os.environ["MYSIMBDP_OUTPUT_DIR"]
trick = os.environ["MYSIMBDP_FILE_NAME"].rsplit(".", 1)[0]
result = os.path.join(out, "result.json")
good = {"rows_ingested": 1, "rows_rejected": 0}

if trick == "fifo":  # whoever reads the result without care waits for ever
    os.mkfifo(result)
elif trick == "rejectsdir":  # a folder where a file is expected
    os.mkdir(os.path.join(out, "rejects.csv"))
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "fallocate":  # past the output limit in one call, just before exiting
    fd = os.open(os.path.join(out, "rejects.csv"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, 300 << 20)
    os.close(fd)
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "hugecount":  # a count no column can hold
    with open(result, "w") as fh:
        json.dump({"rows_ingested": 2**64, "rows_rejected": 0}, fh)
elif trick == "symlink":  # the result is a link to somewhere else
    os.symlink("/etc/hostname", result)
