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
elif trick == "sparse":  # a 10 GiB rejects file that costs no disk: whoever reads it line by line drowns
    with open(os.path.join(out, "rejects.csv"), "wb") as fh:
        fh.truncate(10 << 30)
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "sparserows":  # the same, with a header and a row first, so that it looks worth keeping
    with open(os.path.join(out, "rejects.csv"), "wb") as fh:
        fh.write(b"line,reason,id\n2,bad,1\n")
        fh.truncate(10 << 30)
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "deep":  # a chain of folders deeper and longer than any path may be
    os.chdir(out)
    for _ in range(1500):
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "manyfiles":  # tens of thousands of empty files: no bytes, but every walk over them costs
    for i in range(30000):
        open(os.path.join(out, f"f{i}"), "w").close()
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "nestedresult":  # a small result nested deeper than any JSON parser recurses
    with open(result, "w") as fh:
        fh.write("[" * 30000 + "]" * 30000)
elif trick == "longline":  # a rejects file that is one 100 MB line
    with open(os.path.join(out, "rejects.csv"), "wb") as fh:
        fh.write(b"x" * (100 << 20))
    with open(result, "w") as fh:
        json.dump(good, fh)
elif trick == "errorresult":  # the app says in its result why it could not ingest the file
    with open(result, "w") as fh:
        json.dump({"rows_ingested": 0, "rows_rejected": 0, "error": "\x1b[31mno such\x07 table\n"}, fh)
elif trick == "unlinked":  # bytes in a file with no name any more: invisible to a walk over the folder
    fh = open(os.path.join(out, "hidden"), "wb")
    os.unlink(os.path.join(out, "hidden"))
    written = 0
    try:
        while written < 1500 << 20:
            fh.write(b"u" * (1 << 20))
            fh.flush()
            written += 1 << 20
    except OSError as exc:
        raise SystemExit(f"stopped after {written >> 20} MiB: {exc.strerror}") from None
    with open(result, "w") as fh2:
        json.dump(good, fh2)
elif trick == "setuidrejects":  # rejects that would be a set-uid, world-writable root file if copied as they are
    p = os.path.join(out, "rejects.csv")
    with open(p, "w") as fh:
        fh.write("line,reason\n2,bad\n")
    os.chmod(p, 0o6777)
    with open(result, "w") as fh:
        json.dump({"rows_ingested": 1, "rows_rejected": 1}, fh)
elif trick == "bigrejects":  # 40 MiB of rejected rows from a 60-byte upload: kept whole, they would fill the disk
    with open(os.path.join(out, "rejects.csv"), "w") as fh:
        fh.write("line,reason\n")
        row = "2," + "r" * 1000 + "\n"
        for _ in range((40 << 20) // len(row)):
            fh.write(row)
    with open(result, "w") as fh:
        json.dump({"rows_ingested": 1, "rows_rejected": 40000}, fh)
