"""Run `fetchdeliver deliver` (its real entry point, fetchdeliver.mda.main) once per job, in one process.

Usage: python deliver_batch.py JOBS.json  -- a list of {"argv": [...], "message": PATH, "id": NAME}.
Each job gets the message on stdin and CORPUS_ID=NAME in the environment (the test
programs a script pipes to file what they get under that name). Prints one JSON list
of exit codes. One interpreter for hundreds of deliveries keeps the differential
corpus fast; each delivery is still the MDA's own code path from argv to the mailbox.
"""

import io
import json
import os
import sys

from fetchdeliver import mda


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    codes = []
    real_stdin = sys.stdin
    for job in jobs:
        with open(job["message"], "rb") as f:
            raw = f.read()
        os.environ["CORPUS_ID"] = job["id"]
        sys.stdin = io.TextIOWrapper(io.BytesIO(raw))
        try:
            codes.append(mda.main(job["argv"]))
        finally:
            sys.stdin = real_stdin
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
