"""`make bench`: python -m bench [converge|realtime|http|backups|report ...]; --no-cold skips the cold converge."""

from __future__ import annotations

import sys
import time
import traceback

from bench import report
from bench.common import log

ORDER = ("converge", "realtime", "http", "backups")


def main(argv: list[str]) -> int:
    wanted = [a for a in argv if not a.startswith("--")] or list(ORDER)
    failed = []
    start = time.monotonic()
    for section in ORDER:
        if section not in wanted:
            continue
        log(f"=== {section} ===")
        try:
            if section == "converge":
                from bench import converge

                converge.measure(cold="--no-cold" not in argv)
            elif section == "realtime":
                from bench import realtime

                realtime.measure()
            elif section == "http":
                from bench import http_path

                http_path.measure()
            elif section == "backups":
                from bench import backups

                backups.measure()
        except Exception:  # noqa: BLE001 - record, go on with the next section
            traceback.print_exc()
            failed.append(section)
            log(f"{section}: FAILED (see above); going on")
    report.record_machine()
    report.write_benchmarks()
    log(f"bench done in {time.monotonic() - start:.0f} s" + (f"; failed sections: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
