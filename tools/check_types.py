"""mypy over actstore/ with the configuration in pyproject.toml: strict packages must be clean;
every other error must be in tools/mypy-baseline.txt, and the baseline may only shrink (a
listed error that no longer occurs fails too, so its line is removed when it is fixed).

    python tools/check_types.py            # check
    python tools/check_types.py --write    # rewrite the baseline from today's errors (review the diff!)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tools" / "mypy-baseline.txt"
STRICT = ("actstore/analysis/", "actstore/store/", "actstore/service/")
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*?)\s+\[(?P<code>[\w-]+)\]$")


def errors() -> list[tuple[str, str, str]]:
    """(path, code, message) of every mypy error (line numbers left out: they move)."""
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    out = []
    for line in res.stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            out.append((m["path"], m["code"], m["message"]))
        elif ": error:" in line:
            out.append((line.split(":", 1)[0], "other", line))
    if res.returncode not in (0, 1):
        sys.exit(f"mypy failed to run:\n{res.stdout}\n{res.stderr}")
    return out


def key(e: tuple[str, str, str]) -> str:
    return f"{e[0]}: [{e[1]}] {e[2]}"


def main() -> int:
    found = errors()
    strict = [e for e in found if e[0].startswith(STRICT)]
    rest = Counter(key(e) for e in found if not e[0].startswith(STRICT))
    if "--write" in sys.argv:
        BASELINE.write_text("".join(f"{k}\n" for k in sorted(rest.elements())))
        print(f"wrote {sum(rest.values())} baseline errors to {BASELINE.relative_to(ROOT)}")
        return 1 if strict else 0
    base = (
        Counter(line for line in BASELINE.read_text().splitlines() if line.strip()) if BASELINE.exists() else Counter()
    )
    new, fixed = rest - base, base - rest
    for e in strict:
        print(f"strict: {key(e)}")
    for k in sorted(new.elements()):
        print(f"new (not in the baseline): {k}")
    for k in sorted(fixed.elements()):
        print(f"fixed: remove from {BASELINE.relative_to(ROOT)}: {k}")
    if strict or new or fixed:
        print(
            f"types: {len(strict)} strict errors, {sum(new.values())} new, {sum(fixed.values())} fixed "
            "but still in the baseline"
        )
        return 1
    print(f"types: clean (strict packages), {sum(base.values())} baseline errors elsewhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
